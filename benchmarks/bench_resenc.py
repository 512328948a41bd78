"""Residual-encoder networks against nnU-Net's stock ``ResidualEncoderUNet`` on the ResEnc M preset's topology.

For a cubic patch at 1 mm (default 48^3, batch 2: the topology nnU-Net's ResEnc planners derive with
``get_pool_and_conv_props``, ``n_blocks_per_stage`` 1, 3, 4, 6, 6, 32..320 features) each network is built
by its trainer's builder from the same plans: stock ``ResidualEncoderUNet``, ``MirrorResEncUNet`` (f123,
the plans' widths and keep-params), ``E3nnResEncUNet`` (``nnUNetTrainerE3nn``'s spec and the lean one).
Per network, in its own fresh process: parameters, a training step (forward + backward with deep
supervision, cross-entropy on random labels; median of ``--repeats`` after one warm-up) and its peak
memory (CUDA ``max_memory_allocated`` above the start, or on the CPU the peak resident set ``VmHWM``,
reset before the step, above the resident size before it). Prints a table with ratios to stock.

Usage: ``python benchmarks/bench_resenc.py [--device cpu|cuda] [--patch 48] [--batch 2] [--repeats 3]
[--threads 2] [--networks stock,mirror,mirror_keep,e3nn,e3nn_lean]``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

NETWORKS = {
    "stock": "ResidualEncoderUNet (stock nnU-Net, 3^3)",
    "mirror": "MirrorResEncUNet f123 (plans' widths)",
    "mirror_keep": "MirrorResEncUNet f123 keep-params",
    "e3nn": "E3nnResEncUNet (nnUNetTrainerE3nn spec)",
    "e3nn_lean": "E3nnResEncUNet lean (nnUNetTrainerE3nnLean spec)",
}


def configuration(patch: int):
    """The ResEnc M preset's 3d_fullres configuration for a cubic ``patch`` at 1 mm."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    _, strides, kernels, _, _ = get_pool_and_conv_props([1.0, 1.0, 1.0], [patch] * 3, 4, 999999)
    n = len(strides)
    arch = {"n_stages": n, "features_per_stage": [min(32 * 2 ** i, 320) for i in range(n)],
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [list(k) for k in kernels],
            "strides": [list(s) for s in strides], "n_blocks_per_stage": [1, 3, 4, 6, 6, 6, 6][:n],
            "n_conv_per_stage_decoder": [1] * (n - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    return ConfigurationManager({
        "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
                         "arch_kwargs": arch, "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "patch_size": [patch] * 3, "spacing": [1.0, 1.0, 1.0], "batch_size": 2, "data_identifier": "bench"})


def build(name: str, patch: int):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from nnunet_equivariant.training import e3nn, mirror

    config = configuration(patch)
    if name == "stock":
        return get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                      config.network_arch_init_kwargs_req_import, 1, 3, allow_init=True,
                                      deep_supervision=True)
    trainer = {"mirror": mirror.nnUNetTrainerMirror, "mirror_keep": mirror.nnUNetTrainerMirrorKeepParams,
               "e3nn": e3nn.nnUNetTrainerE3nn, "e3nn_lean": e3nn.nnUNetTrainerE3nnLean}[name]
    return trainer.build_network_architecture(None, config, 1, 3, enable_deep_supervision=True)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def worker(name: str, args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net = build(name, args.patch).to(device).train()
    x = torch.randn(args.batch, 1, *[args.patch] * 3, device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)

    def step():
        outputs = net(x)
        loss = sum(torch.nn.functional.cross_entropy(o, torch.randint(0, 3, (o.shape[0], *o.shape[2:]), device=device))
                   for o in outputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident size
        before = _status_kib("VmRSS")
        step()
        peak = (_status_kib("VmHWM") - before) * 1024
    return {"params": sum(p.numel() for p in net.parameters()), "step_s": statistics.median(times),
            "peak_mib": max(peak, 0) / 2 ** 20}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    names = args.networks.split(",")
    unknown = sorted(set(names) - set(NETWORKS))
    if unknown:
        raise SystemExit(f"unknown networks {unknown}; choose from {sorted(NETWORKS)}")
    if "stock" not in names:
        names = ["stock", *names]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(args.threads)}
    rows = {}
    for name in names:
        cmd = [sys.executable, __file__, "--worker", name, *(argv if argv is not None else sys.argv[1:])]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        rows[name] = json.loads(out.strip().splitlines()[-1])
        print(f"{name}: {rows[name]}", file=sys.stderr)
    ref = rows["stock"]
    print(f"\nResEnc M topology, patch {args.patch}^3, batch {args.batch}, {args.device}, {args.threads} threads\n")
    print("| network | params | x stock | train step (s) | x stock | train peak (MiB) | x stock |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {NETWORKS[name]} | {row['params'] / 1e6:.2f} M | {row['params'] / ref['params']:.3f} | "
              f"{row['step_s']:.2f} | {row['step_s'] / ref['step_s']:.2f} | {row['peak_mib']:.0f} | "
              f"{row['peak_mib'] / max(ref['peak_mib'], 1e-9):.2f} |")


if __name__ == "__main__":
    main()
