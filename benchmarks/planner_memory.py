"""Peak memory of a training forward + backward pass against the planner's estimate, on the CPU.

Each network is measured in a fresh process whose allocator returns every freed block above 64 KiB to the
system, so the resident size follows the live tensors: the network is built from the equivariant plans'
topology (``isotropic_architecture``), a tiny warm-up pass initialises the kernels, then for each patch
size (smallest first) the peak resident memory a pass adds is read from /proc. Prints one row per network and
patch size with the estimate / measured ratio (the planner's goal: within 30 %). The constants of
``planning/memory.py`` were fit to these rows (``docs/planner.md``).

    python benchmarks/planner_memory.py                       # 4 stages, patches 32 48 64, batch 2
    python benchmarks/planner_memory.py --stages 5 --sizes 48 64 80 --batch 1
    python benchmarks/planner_memory.py --networks nnUNetTrainerE3nnLean nnUNetTrainerE3nnAntialias

``--networks`` takes ``E3nnUNet`` (``nnUNetTrainerE3nn``'s), ``PlainConvUNet``, the residual-encoder networks
of the ResEnc presets (``ResidualEncoderUNet``, ``E3nnResEncUNet``: ``plan_and_preprocess -preset M|L|XL``'s
topology, nnU-Net's blocks per stage) and the name of any steerable trainer of this package: the network of
that trainer's ``E3nnSpec``, the one the planner sizes for with ``plan_and_preprocess -tr NAME``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Sequence

from nnunet_equivariant.evaluation.cost import process_status_bytes

# measured on the ResEnc presets' topology (``isotropic_architecture(residual=True)``: blocks 1, 3, 4, 6, ...
# per stage, one decoder convolution, the plans' 3^3 kernels; the steerable network's kernels follow its spec)
RESIDUAL_NETWORKS = ("ResidualEncoderUNet", "E3nnResEncUNet")


def measure(network_name: str, sizes: list[int], batch: int, stages: int, threads: int) -> list[dict]:
    import torch

    from nnunet_equivariant.planning.memory import estimate_forward_backward_bytes, largest_kernel_values
    from nnunet_equivariant.planning.planner import RESENC_KERNEL_SIZE, isotropic_architecture, networks_on_plans

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    residual = network_name in RESIDUAL_NETWORKS
    architecture = (isotropic_architecture(stages, kernel_size=RESENC_KERNEL_SIZE, residual=True) if residual
                    else isotropic_architecture(stages))
    configuration = {"architecture": architecture,
                     "patch_size": [sizes[0]] * 3, "spacing": [1.0, 1.0, 1.0]}
    if network_name.startswith("nnUNetTrainer"):
        from nnunet_equivariant.training import e3nn as trainers

        network = networks_on_plans(configuration, 1, 3, getattr(trainers, network_name).spec)["E3nnUNet"]
    else:
        network = networks_on_plans(configuration, 1, 3)[network_name]
    rows = []
    for size in sorted(sizes):
        patch = (size,) * 3
        rows.append({"network": network_name, "patch": size, "batch": batch, "stages": stages,
                     "parameters": sum(p.numel() for p in network.parameters()),
                     "values": int(network.compute_conv_feature_map_size(list(patch))),
                     "largest_kernel": largest_kernel_values(network),
                     "measured": measure_forward_backward_peak(network, patch, batch),
                     "estimate": estimate_forward_backward_bytes(network, patch, batch)})
    return rows


def measure_forward_backward_peak(network, patch_size: Sequence[int], batch_size: int,
                                  input_channels: int = 1) -> int:
    """Peak resident memory (bytes) a forward + backward pass adds to this process, on the CPU.

    Linux only (resets and reads the process's resident high-water mark). A tiny warm-up pass first
    initialises the kernels' one-time state; gradients are then freed so the measured pass allocates
    them again. Memory the allocator keeps after a free stays resident and hides later growth: run one
    measurement per fresh process, or set ``MALLOC_MMAP_THRESHOLD_=65536`` (glibc) for the process so every
    large block goes back to the system when freed, and measure patch sizes smallest first.
    """
    import torch

    if not sys.platform.startswith("linux"):
        raise RuntimeError("measure_forward_backward_peak reads /proc and runs on Linux only")
    network.train()
    for size, batch in ((_warmup_size(network), 1), (tuple(patch_size), batch_size)):
        network.zero_grad(set_to_none=True)
        x = torch.randn(batch, input_channels, *size)
        baseline = process_status_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark (VmHWM) to the current resident size
        out = network(x)
        loss = sum(o.float().square().mean() for o in (out if isinstance(out, (list, tuple)) else [out]))
        loss.backward()
        peak = process_status_bytes("VmHWM") - baseline
        del out, loss, x
    network.zero_grad(set_to_none=True)
    return peak


def _warmup_size(network) -> tuple[int, ...]:
    """A small input every pooling divides, with a 2-voxel bottleneck (instance norm needs more than one)."""
    import torch

    strides = torch.tensor([[s] * 3 if isinstance(s, int) else list(s) for s in network.encoder.strides])
    return tuple(2 * int(v) for v in strides.prod(0))


# glibc: serve every block above 64 KiB by mmap and give it back on free (no dynamic threshold), so the
# resident size follows the live tensors instead of what the allocator keeps for reuse
MEASURING_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def run(networks, sizes, batch, stages, threads) -> list[dict]:
    rows = []
    for name in networks:
        cmd = [sys.executable, __file__, "--worker", name, ",".join(map(str, sizes)), str(batch), str(stages),
               str(threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=MEASURING_ENV).stdout
        for row in json.loads(out.strip().splitlines()[-1]):
            print_row(row)
            rows.append(row)
    return rows


def print_row(r: dict) -> None:
    mib = 2 ** 20
    print(f"{r['network']:>26} {r['stages']:>6} {r['patch']:>4}^3 {r['batch']:>5} {r['parameters'] / 1e6:>8.2f}M "
          f"{r['values'] / 1e6:>9.1f}M {r['largest_kernel'] / 1e6:>9.1f}M {r['measured'] / mib:>10.0f} {r['estimate'] / mib:>10.0f} "
          f"{r['estimate'] / r['measured']:>7.2f}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", default=["E3nnUNet", "PlainConvUNet"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 48, 64])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        name, sizes, batch, stages, threads = args.worker
        print(json.dumps(measure(name, [int(s) for s in sizes.split(",")], int(batch), int(stages), int(threads))))
        return 0
    print(f"{'network':>26} {'stages':>6} {'patch':>6} {'batch':>5} {'params':>9} {'fmap vals':>10} "
          f"{'max kernel':>10} {'peak MiB':>10} {'est. MiB':>10} {'ratio':>7}")
    rows = run(args.networks, args.sizes, args.batch, args.stages, args.threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
