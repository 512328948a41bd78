"""ACDC-S signed-distance grid per surface: today's path (winding-number sign) against the default one.

``mesh to_patches acdc`` computes, for each ACDC-S surface, exact signed distances on every grid node that
the patches around its vertices read. Until now the sign came from libigl's generalised winding number,
which visits the whole mesh hierarchy per node (21 s per surface on a shared 2-core CPU). The default path
takes the sign from the angle-weighted pseudonormal of the closest feature, exact on the closed,
consistently wound surfaces ``acdc_surface`` returns, and queries the nodes in Z-order. Both paths run on
the same nodes of the same surface in one process, interleaved; the table gives their times and the
largest difference of their values (they must agree to float rounding). Times are wall clock and CPU
time of the process (all threads): on a shared machine the CPU time measures the work, the wall clock also
the waiting.

Usage: ``python benchmarks/bench_sdf_acdc.py [--side 10] [--repeats 2] [--patients 1]``
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=float, default=10.0, help="patch side a (mm); grid spacing a / 15")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of each path")
    parser.add_argument("--patients", type=int, default=1, help="stand-in patients (two surfaces each)")
    args = parser.parse_args(argv)

    from bench_sdf import cpu_name

    from nnunet_equivariant.meshes.acdc import find_acdc_cases
    from nnunet_equivariant.meshes.sdf import _patch_footprint, compute_sdf_grid, signed_distance
    from nnunet_equivariant.meshes.standins import write_acdc_standin

    side, n = args.side, args.n
    spacing = side / (n - 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_acdc_standin(Path(tmp) / "ACDC", num_patients=args.patients)
        for case in find_acdc_cases(root):
            mesh = case.read()
            margin = side / 2 + 2 * spacing
            times = {"today": [], "default": []}
            cpu = {"today": [], "default": []}
            for _ in range(args.repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                grid = compute_sdf_grid(mesh.vertices, mesh.faces, spacing, margin=margin,
                                        band_centres=mesh.labelled_vertices, band_side=side, n=n)
                times["default"].append(time.perf_counter() - start)
                cpu["default"].append(time.process_time() - start_cpu)
                # today's path: the same nodes in raster order, winding-number sign
                start, start_cpu = time.perf_counter(), time.process_time()
                nodes = np.argwhere(_patch_footprint(grid.values.shape, grid.origin, spacing,
                                                     mesh.labelled_vertices, side, n))
                today = signed_distance(grid.origin + spacing * nodes, mesh.vertices, mesh.faces,
                                        sign="winding_number")
                times["today"].append(time.perf_counter() - start)
                cpu["today"].append(time.process_time() - start_cpu)
            diff = float(np.abs(grid.values[tuple(nodes.T)] - today.astype(np.float32)).max())
            rows.append((case.name, len(mesh.vertices), len(nodes), np.median(times["today"]),
                         np.median(times["default"]), np.median(cpu["today"]), np.median(cpu["default"]), diff))
            print(f"{case.name}: wall today {times['today']}, default {times['default']}; "
                  f"cpu today {cpu['today']}, default {cpu['default']}", flush=True)
    print(f"\nCPU: {cpu_name()}; side a = {side} mm, N = {n}, grid spacing {spacing:.4g} mm; median of "
          f"{args.repeats} interleaved runs")
    print("| surface | vertices | band nodes | today: winding number, wall / CPU (s) | default: pseudonormal, "
          "Z-order, wall / CPU (s) | speed-up wall / CPU | max abs difference (mm) |")
    print("|---|---|---|---|---|---|---|")
    for name, verts, nodes, t_old, t_new, c_old, c_new, diff in rows:
        print(f"| {name} | {verts:,} | {nodes:,} | {t_old:.1f} / {c_old:.1f} | {t_new:.1f} / {c_new:.1f} | "
              f"{t_old / t_new:.1f}x / {c_old / c_new:.1f}x | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
