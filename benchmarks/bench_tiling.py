"""Tiles per case with symmetric tiling against nnU-Net's sliding window, same sizes (no network: the predict
time of a case is its tiles x the time per tile, ``bench_tta.py``).

``nnunet-equivariant predict`` tiles cases mirror-symmetrically for networks with a symmetry
(``--symmetric_tiling auto``, ``RotationTTAPredictor``): an axis shorter than the patch by an odd number of
voxels is padded to one voxel more than the patch and predicted as two tiles (offsets 0 and 1, mirror images
of each other: a single placement would lie one voxel off the pooling grid after a flip), and the offsets of
a longer axis are ``symmetric_steps`` (nnU-Net's where they are mirror-symmetric, else nnU-Net's number
evenly spaced with symmetric rounding, one more where an odd number cannot be centred on an odd span).
Counted per axis over every size in a range, and for cubic cases (tiles = per-axis count cubed):

- ``[p/2, p)``: cases smaller than the patch (nnU-Net: one tile),
- ``[p, 4p]``: cases tiled by up to seven tiles per axis at nnU-Net's step 0.5.

    python benchmarks/bench_tiling.py [--patches 32 64 128] [--step 0.5]
"""
from __future__ import annotations

import argparse

import numpy as np
from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

from nnunet_equivariant.inference.rotation_tta import symmetric_steps


def tiles_per_axis(n: int, p: int, step: float) -> tuple[int, int]:
    """Tiles along one axis of ``n`` voxels with a ``p``-voxel patch: (nnU-Net's, symmetric tiling's)."""
    if n < p:  # nnU-Net pads to the patch; symmetric tiling pads an odd shortfall to p + 1: two tiles
        return 1, 1 + (p - n) % 2
    return (len(compute_steps_for_sliding_window((n,), (p,), step)[0]), len(symmetric_steps((n,), (p,), step)[0]))


def rows(patches, step: float) -> list[dict]:
    """Per patch and size range: mean tiles per axis (nnU-Net, symmetric), their ratio, the mean and largest
    ratio for cubic cases, and the share of sizes that need a tile more."""
    out = []
    for p in patches:
        for name, sizes in ((f"[{p // 2}, {p})", range(p // 2, p)), (f"[{p}, {4 * p}]", range(p, 4 * p + 1))):
            counts = np.array([tiles_per_axis(n, p, step) for n in sizes], dtype=float)
            cubic = counts[:, 1] ** 3 / counts[:, 0] ** 3
            out.append({"patch": p, "sizes": name, "nnunet_per_axis": counts[:, 0].mean(),
                        "symmetric_per_axis": counts[:, 1].mean(), "per_axis_ratio": counts[:, 1].sum() / counts[:, 0].sum(),
                        "cubic_mean_ratio": cubic.mean(), "cubic_max_ratio": cubic.max(),
                        "sizes_with_more": (counts[:, 1] > counts[:, 0]).mean()})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--step", type=float, default=0.5, help="nnU-Net's tile_step_size (-step_size)")
    args = parser.parse_args(argv)
    print(f"tile step {args.step}; per axis: mean tiles over every size in the range; cubic: tiles of an n^3 case")
    print("| patch | case sizes (voxels per axis) | tiles per axis, nnU-Net | symmetric | ratio | cubic cases: "
          "mean ratio | largest ratio | sizes with a tile more |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows(args.patches, args.step):
        print(f"| {r['patch']} | {r['sizes']} | {r['nnunet_per_axis']:.2f} | {r['symmetric_per_axis']:.2f} | "
              f"{r['per_axis_ratio']:.3f}x | {r['cubic_mean_ratio']:.2f}x | {r['cubic_max_ratio']:.2f}x | "
              f"{r['sizes_with_more']:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
