"""E3nnUNet against PlainConvUNet (same per-stage feature dimensions, 5x5x5 kernels) and against the same
steerable network rebuilding its kernels on every forward (the reference design), measured in one run.

Each (network, mode) runs in fresh subprocesses: build the network and a ``(1, 1, S, S, S)`` input, run one
warm-up step (it also fills E3nnUNet's eval kernel cache, which then counts as resident, like the plain
network's weights), then measure:

- time: the median of ``--repeats`` steps, with the default allocator; ``--clock wall`` (default) or
  ``--clock cpu``, the process's CPU time, which other processes on a shared machine barely disturb (use it
  with ``--threads 1``: with more threads it adds up their busy-waiting too);
- CPU peak memory: the step's peak resident set size (the kernel's ``ru_maxrss`` high-water mark) minus the
  resident size just before it, in a separate process where glibc's ``malloc`` returns every block over
  64 KiB to the system on free (``MALLOC_MMAP_THRESHOLD_``), so the resident size follows the live
  tensors: activations, gradients and temporaries of the step, not the model and input;
- CUDA peak memory: ``torch.cuda.max_memory_allocated`` during the step minus the allocation before it.

Usage: ``python benchmarks/bench_e3nn.py [--device cpu|cuda] [--threads 2] [--size 64] [--repeats 3]
[--clock wall|cpu]``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# nnU-Net's default topology for a 64^3 patch at 1 mm: 5 stages, widths 32..320, pooling by 2.
WIDTHS = [32, 64, 128, 256, 320]
STRIDES = [[1, 1, 1]] + [[2, 2, 2]] * 4
CONFIGS = {
    "plain": "PlainConvUNet, 5^3 kernels, E3nnUNet's stage dims",
    "e3nn": "E3nnUNet (kernel cached in eval)",
    "e3nn_rebuild": "E3nnUNet, kernel rebuilt every forward (reference design)",
}


def build(name: str):
    import torch
    from torch import nn

    from nnunet_equivariant.networks import E3nnUNet

    e3nn = E3nnUNet(input_channels=1, num_classes=3, n_stages=len(WIDTHS), features_per_stage=WIDTHS,
                    strides=STRIDES, n_conv_per_stage=2, n_conv_per_stage_decoder=2, deep_supervision=True)
    if name.startswith("e3nn"):
        return e3nn
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    dims = [irreps.dim for irreps in e3nn.encoder.output_irreps]
    net = PlainConvUNet(1, len(WIDTHS), dims, nn.Conv3d, 5, STRIDES, 2, 3, 2, conv_bias=True,
                        norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                        nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)
    net.apply(net.initialize)
    return net.to(torch.float32)


def worker(name: str, mode: str, measure: str, device: str, threads: int, size: int, repeats: int,
           clock: str) -> dict:
    import torch

    from nnunet_equivariant.layers import SteerableConv3d

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if name == "e3nn_rebuild":  # the reference design: no kernel cache, the kernel is rebuilt every forward
        cached = SteerableConv3d._cached_kernel_and_bias

        def rebuild(self):
            self._cache = None
            return cached(self)

        SteerableConv3d._cached_kernel_and_bias = rebuild
    net = build(name).to(device)
    x = torch.randn(1, 1, size, size, size, device=device)
    result = {"name": name, "mode": mode, "params": sum(p.numel() for p in net.parameters())}
    if mode == "train":
        net.train()
        target = [torch.randn_like(o) for o in net(x)]
        net.zero_grad(set_to_none=True)

        def step():
            loss = sum(((o - t) ** 2).mean() for o, t in zip(net(x), target))
            loss.backward()
            net.zero_grad(set_to_none=True)
    else:
        net.eval()
        net.decoder.deep_supervision = False

        def step():
            with torch.inference_mode():
                net(x)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    step()  # warm-up
    sync()
    if measure == "memory":
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            step()
            sync()
            peak = torch.cuda.max_memory_allocated() - before
        else:
            before = _rss_bytes()
            step()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        result["peak_mib"] = max(peak, 0) / 2 ** 20
        return result
    timer = time.process_time if clock == "cpu" else time.perf_counter
    times = []
    for _ in range(repeats):
        sync()
        t = timer()
        step()
        sync()
        times.append(timer() - t)
    result["time_s"] = statistics.median(times)
    return result


def conv_layer_times(threads: int, size: int, repeats: int, clock: str) -> dict[int, float]:
    """Forward + backward of one full-resolution 5^3 convolution from 30 channels to 30 (the plain
    network's) and to 36 (E3nnUNet's: 30 features + 6 gates), batch 1: the architectural part of the ratio."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    timer = time.process_time if clock == "cpu" else time.perf_counter
    x = torch.randn(1, 30, size, size, size, requires_grad=True)
    result = {}
    for out_channels in (30, 36):
        w = torch.randn(out_channels, 30, 5, 5, 5, requires_grad=True)
        times = []
        for _ in range(repeats + 1):
            t = timer()
            F.conv3d(x, w, padding=2).sum().backward()
            times.append(timer() - t)
        result[out_channels] = statistics.median(times[1:])
    return result


def norm_gate_times(threads: int, size: int, repeats: int, clock: str) -> dict[str, float]:
    """Forward + backward of one full-resolution block's instance norm + gate (36 channels in, 30 out), as
    the autograd composition ``gate(norm(x))`` and as the fused node E3nnUNet uses in eager mode."""
    import torch

    from nnunet_equivariant.layers._norm_gate import norm_gate
    from nnunet_equivariant.layers import SteerableBlock

    torch.set_num_threads(threads)
    timer = time.process_time if clock == "cpu" else time.perf_counter
    block = SteerableBlock("1x0e", "8x0e + 4x1e + 2x2e", 5, (1.0, 1.0, 1.0), False, 5, 2, "leaky_relu", "gaussian_shells")
    x = torch.randn(1, block.gate.irreps_in.dim, size, size, size, requires_grad=True)
    variants = {"composition": lambda: block.gate(block.norm(x)),
                "fused": lambda: norm_gate(x, block.norm.weight, block.norm.bias, block._fused)}
    result = {}
    for name, fn in variants.items():
        times = []
        for _ in range(repeats + 1):
            t = timer()
            fn().sum().backward()
            times.append(timer() - t)
        result[name] = statistics.median(times[1:])
    return result


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(name: str, mode: str, args) -> dict:
    result = {}
    for measure in ("time", "memory"):
        cmd = [sys.executable, __file__, "--worker", name, mode, measure, "--device", args.device, "--threads",
               str(args.threads), "--size", str(args.size), "--repeats", str(args.repeats), "--clock", args.clock]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        if measure == "memory":
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        result.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="cubic patch size (divisible by 16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    parser.add_argument("--worker", nargs=3, metavar=("NAME", "MODE", "MEASURE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.device, args.threads, args.size, args.repeats, args.clock)))
        return

    import platform

    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, device {args.device}, {args.threads} threads, patch {args.size}^3, batch 1, "
          f"median of {args.repeats}, {args.clock} clock")
    results = {}
    for mode in ("train", "eval"):
        for name in CONFIGS:
            if name == "e3nn_rebuild" and mode == "train":
                continue  # training rebuilds the kernel every step in any design
            results[name, mode] = r = run(name, mode, args)
            print(f"  measured {name:13s} {mode:5s} {r['time_s']:7.2f} s {r['peak_mib']:8.0f} MiB", flush=True)
    layer = conv_layer_times(args.threads, args.size, args.repeats, args.clock)
    print(f"  one 5^3 conv at {args.size}^3, fwd + bwd: 30 -> 30 channels {layer[30]:.2f} s, 30 -> 36 channels "
          f"{layer[36]:.2f} s ({layer[36] / layer[30]:.2f}x)")
    fused = norm_gate_times(args.threads, args.size, args.repeats, args.clock)
    print(f"  norm + gate of one 36-channel block at {args.size}^3, fwd + bwd: composition "
          f"{fused['composition']:.3f} s, fused node {fused['fused']:.3f} s "
          f"({fused['fused'] / fused['composition']:.2f}x)")
    print()
    print("| network | params | train step (s) | x plain | train peak (MiB) | x plain | eval fwd (s) | x plain "
          "| eval peak (MiB) | x plain |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    plain_t, plain_e = results["plain", "train"], results["plain", "eval"]
    for name, label in CONFIGS.items():
        t, e = results.get((name, "train")), results[name, "eval"]
        train = (f"{t['time_s']:.2f} | {t['time_s'] / plain_t['time_s']:.2f} | {t['peak_mib']:.0f} | "
                 f"{t['peak_mib'] / plain_t['peak_mib']:.2f}") if t else "- | - | - | -"
        print(f"| {label} | {e['params']:,} | {train} | {e['time_s']:.2f} | {e['time_s'] / plain_e['time_s']:.2f} | "
              f"{e['peak_mib']:.0f} | {e['peak_mib'] / max(plain_e['peak_mib'], 1e-9):.2f} |")


if __name__ == "__main__":
    main()
