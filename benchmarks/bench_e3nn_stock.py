"""The steerable network's bill against stock nnU-Net (issue 8): stock ``PlainConvUNet`` (3^3 kernels), E3nnUNet
with ``conv3d`` only, E3nnUNet with the per-layer choice between ``conv3d`` and the tiled FFT convolution
(``layers/_fft_conv.py``) and the lean E3nnUNet (``nnUNetTrainerE3nnLean``: half the irreps per stage), each
built by its trainer from nnU-Net's default plans for the patch.

For each ``(patch, batch)`` (default: 48^3 batch 2 and 64^3 batch 1 at 1 mm, the topology nnU-Net's planner
derives with ``get_pool_and_conv_props``: 4 and 5 stages, 32..320 features) it measures a training step
(forward + backward with deep supervision, cross-entropy on random labels; under ``--amp`` autocast and a
``GradScaler`` as nnU-Net trains) and an eval forward (inference mode, one output), in fresh worker processes:

- times: each of ``--rounds`` fresh worker processes builds all three networks, runs one warm-up step of
  each (it also does the fast path's per-shape measurement and fills the eval kernel caches), then
  ``--repeats`` rounds of one step of each, **interleaved** (stock, direct, fast, stock, ...) in the same
  process, so load changes and the allocator's state hit all three alike; the table shows the median
  over all steps (separate processes per network gave the fast path a warmer heap: a spurious 2x);
- memory: one fresh process per network;
- peak memory: CUDA ``max_memory_allocated`` above what was allocated before the step, or on CPU the step's
  peak resident set size (``VmHWM``, reset before the step) above the resident size before it, with glibc returning blocks over 64 KiB to the
  system (``MALLOC_MMAP_THRESHOLD_``) so the resident size follows the live tensors.

With ``--nnunet``, then through nnU-Net's own commands on rods and discs (``nnunet_commands``): an epoch of
``nnUNetv2_train`` and a case of ``nnUNetv2_predict`` (each trainer's own test-time mirroring) for
``--nnunet-trainers`` (stock, ``nnUNetTrainerE3nn``, ``nnUNetTrainerE3nnLean``).

Usage: ``python benchmarks/bench_e3nn_stock.py [--device cpu|cuda] [--amp] [--threads 2] [--rounds 2]
[--repeats 2] [--cases 48x2,64x1] [--configs stock,direct,fast,lean] [--trainer nnUNetTrainerE3nn] [--nnunet]``.
On a GPU: ``--device cuda --amp --nnunet``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "stock": "nnU-Net PlainConvUNet (3^3, stock)",
    "direct": "E3nnUNet, conv3d only",
    "fast": "E3nnUNet, per-layer conv3d / FFT",
    "lean": "E3nnUNet lean (nnUNetTrainerE3nnLean), conv3d only",
}
NNUNET_TRAINERS = "nnUNetTrainer,nnUNetTrainerE3nn,nnUNetTrainerE3nnLean"


def configuration(patch: int):
    """nnU-Net's default 3d_fullres configuration for a cubic ``patch`` at 1 mm."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    _, strides, kernels, _, _ = get_pool_and_conv_props([1.0, 1.0, 1.0], [patch] * 3, 4, 999999)
    n = len(strides)
    arch = {"n_stages": n, "features_per_stage": [min(32 * 2 ** i, 320) for i in range(n)],
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [list(k) for k in kernels],
            "strides": [list(s) for s in strides], "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    return ConfigurationManager({
        "patch_size": [patch] * 3, "spacing": [1.0, 1.0, 1.0], "batch_size": 2, "data_identifier": "x",
        "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                         "arch_kwargs": arch, "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}})


def build(name: str, patch: int, trainer: str):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from nnunet_equivariant.training import e3nn as e3nn_trainers

    config = configuration(patch)
    if name == "stock":
        return get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                      config.network_arch_init_kwargs_req_import, 1, 3, allow_init=True,
                                      deep_supervision=True)
    trainer = "nnUNetTrainerE3nnLean" if name == "lean" else trainer
    return getattr(e3nn_trainers, trainer).build_network_architecture(None, config, 1, 3, True)


def _make_step(name: str, mode: str, patch: int, batch: int, args):
    """``(step, params)``: one training step or eval forward of configuration ``name``."""
    import torch

    from nnunet_equivariant.layers import _fft_conv

    torch.manual_seed(0)
    device = torch.device(args.device)
    net = build(name, patch, args.trainer).to(device)
    x = torch.randn(batch, 1, patch, patch, patch, device=device)
    amp = torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16,
                         enabled=args.amp)
    algorithm = "auto" if name == "fast" else "direct"
    if mode == "train":
        net.train()
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.99, nesterov=True)
        scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")
        with torch.no_grad():
            targets = [torch.randint(0, 3, (batch, *o.shape[2:]), device=device) for o in net(x)]

        def step():
            optimizer.zero_grad(set_to_none=True)
            with _fft_conv.conv_algorithm(algorithm), amp:
                loss = sum(torch.nn.functional.cross_entropy(o, t) for o, t in zip(net(x), targets))
            with _fft_conv.conv_algorithm(algorithm):
                scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    else:
        net.eval()
        net.decoder.deep_supervision = False

        def step():
            with _fft_conv.conv_algorithm(algorithm), torch.inference_mode(), amp:
                net(x)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def synced_step():
        step()
        sync()

    return synced_step, sum(p.numel() for p in net.parameters())


def worker(name: str, mode: str, patch: int, batch: int, args) -> dict:
    """Memory of configuration ``name``, or (``name == "all"``) the times of every configuration measured
    in one process, interleaved step by step (one allocator and cache state for all of them)."""
    import torch

    from nnunet_equivariant.layers import _fft_conv

    torch.set_num_threads(args.threads)
    names = args.configs.split(",") if name == "all" else [name]
    steps, result = {}, {}
    for n in names:
        steps[n], params = _make_step(n, mode, patch, batch, args)
        steps[n]()  # warm-up: the fast path measures its per-shape choices here, eval caches fill
        result[n] = {"params": params}
    if args.measure == "memory":
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            steps[name]()
            peak = torch.cuda.max_memory_allocated() - before
        else:  # the high-water mark is reset first: the warm-up's per-shape measurement must not count
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            before = _status_kib("VmRSS")
            steps[name]()
            peak = (_status_kib("VmHWM") - before) * 1024
        result[name]["peak_mib"] = max(peak, 0) / 2 ** 20
        return result
    for n in names:
        result[n]["times"] = []
    for _ in range(args.repeats):
        for n in names:
            start = time.perf_counter()
            steps[n]()
            result[n]["times"].append(time.perf_counter() - start)
    choices = {str(k[:6]): v for k, v in _fft_conv.algorithm_cache().items() if k[0] != "fft"}
    for n in names:
        result[n]["choices"] = choices if n == "fast" else {}
    return result


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _spawn(name, mode, measure, patch, batch, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, mode, measure, str(patch), str(batch), "--device", args.device,
           "--threads", str(args.threads), "--repeats", str(args.repeats), "--trainer", args.trainer,
           "--configs", args.configs]
    cmd += ["--amp"] if args.amp else []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if measure == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"worker {name} {mode} {measure} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _load() -> str:
    try:
        return "load average (1, 5, 15 min) " + ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", action="store_true", help="autocast (float16 on CUDA, bfloat16 on CPU)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of fresh workers")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per worker")
    parser.add_argument("--cases", default="48x2,64x1", help="comma-separated PATCHxBATCH")
    parser.add_argument("--modes", default="train,eval")
    parser.add_argument("--trainer", default="nnUNetTrainerE3nn", help="E3nn trainer whose network is measured")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"networks measured per step, of {list(CONFIGS)}")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory workers")
    parser.add_argument("--nnunet", action="store_true",
                        help="also an epoch through nnUNetv2_train and a case through nnUNetv2_predict")
    parser.add_argument("--nnunet-trainers", default=NNUNET_TRAINERS, help="trainers for --nnunet, comma-separated")
    parser.add_argument("--nnunet-size", type=int, default=48, help="training image size (= nnU-Net's patch)")
    parser.add_argument("--nnunet-case-size", type=int, default=64, help="size of the predicted cases")
    parser.add_argument("--nnunet-iterations", type=int, default=5, help="training iterations per epoch")
    parser.add_argument("--workdir", help="folder for --nnunet's nnU-Net folders (default: a temporary one)")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        name, mode, args.measure, patch, batch = args.worker
        print(json.dumps(worker(name, mode, int(patch), int(batch), args)))
        return

    import platform

    import torch

    cases = [tuple(int(v) for v in c.split("x")) for c in args.cases.split(",") if c]
    configs = args.configs.split(",")
    if "stock" not in configs or set(configs) - set(CONFIGS):
        parser.error(f"--configs must include stock (the reference) and name only {list(CONFIGS)}, got {args.configs}")
    modes = args.modes.split(",")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"device {args.device}{' (' + torch.cuda.get_device_name() + ')' if args.device == 'cuda' else ''}, "
          f"amp {args.amp}, {args.threads} threads, {args.rounds} interleaved rounds x {args.repeats} steps; "
          f"{_load()} at start", flush=True)
    rows = {}
    for patch, batch in cases:
        for mode in modes:
            times = {name: [] for name in configs}
            for r in range(args.rounds):
                measured = _spawn("all", mode, "time", patch, batch, args)
                for name in configs:
                    res = measured[name]
                    times[name] += res["times"]
                    rows.setdefault((patch, batch, mode, name), {}).update(params=res["params"],
                                                                          choices=res["choices"])
                    fft = sum(v != "direct" for v in res["choices"].values())
                    note = f" (FFT for {fft} of {len(res['choices'])} shapes)" if name == "fast" else ""
                    print(f"  {patch}^3 b{batch} {mode:5s} round {r + 1} {name:6s} "
                          f"{' '.join(f'{t:.2f}' for t in res['times'])} s{note}; {_load()}", flush=True)
            for name in configs:
                row = rows[patch, batch, mode, name]
                row["time_s"] = statistics.median(times[name])
                if not args.no_memory:
                    row["peak_mib"] = _spawn(name, mode, "memory", patch, batch, args)[name]["peak_mib"]
    print(f"\n{_load()} at the end\n")
    for (patch, batch, mode, name), row in rows.items():
        if name == "fast":
            fft = sorted({str(k): v for k, v in row["choices"].items() if v != "direct"}.items())
            print(f"fast path, {patch}^3 b{batch} {mode}: FFT chosen for {len(fft)} of {len(row['choices'])} "
                  f"(direction, batch, C_in, C_out, size, taps): {fft}")
    print("\n| patch, batch | network | params | train step (s) | x stock | train peak (MiB) | x stock | "
          "eval fwd (s) | x stock | eval peak (MiB) | x stock |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for patch, batch in cases:
        for name in configs:
            label, cells = CONFIGS[name], []
            for mode in ("train", "eval"):
                row, ref = rows.get((patch, batch, mode, name)), rows.get((patch, batch, mode, "stock"))
                if row is None:
                    cells.append("- | - | - | -")
                    continue
                mem = (f"{row['peak_mib']:.0f} | {row['peak_mib'] / max(ref['peak_mib'], 1e-9):.2f}"
                       if "peak_mib" in row else "- | -")
                cells.append(f"{row['time_s']:.2f} | {row['time_s'] / ref['time_s']:.2f} | {mem}")
            params = next(r["params"] for (p, b, _, n), r in rows.items() if (p, b, n) == (patch, batch, name))
            print(f"| {patch}^3, {batch} | {label} | {params:,} | {' | '.join(cells)} |")

    if args.nnunet:
        nnunet_commands(args)


def nnunet_commands(args) -> None:
    """An epoch through ``nnUNetv2_train`` and a case through ``nnUNetv2_predict`` per trainer, on rods and
    discs planned by nnU-Net's default planner (``--nnunet-size``^3 images at 1 mm: the patch is the image).

    Epoch: median of 3 epochs of ``--nnunet-iterations`` iterations and nnU-Net's validation iterations (a
    schedule shim per trainer). Case: ``(t(3 cases) - t(1 case)) / 2`` of ``nnUNetv2_predict`` with each
    trainer's own test-time mirroring (stock 8 passes, SO(3) 2), so the process start and model loading cancel.
    """
    import tempfile
    from pathlib import Path

    from nnunet_runs import nnunet_env, run_command, schedule_trainer

    from nnunet_equivariant.evaluation.cost import training_times
    from nnunet_equivariant.synthetic import write_rods_and_discs_dataset

    out = Path(args.workdir or tempfile.mkdtemp(prefix="bench_e3nn_stock_")).resolve()
    env = {**nnunet_env(out, args.device), "OMP_NUM_THREADS": str(args.threads)}
    log = out / "commands.log"
    dataset_id, name = 914, "BenchRodsDiscs"
    raw = out / "nnUNet_raw"
    dataset = raw / f"Dataset{dataset_id}_{name}"
    if not dataset.is_dir():
        write_rods_and_discs_dataset(raw, dataset_id, name, num_train=6, num_test=0, shape=[args.nnunet_size] * 3)
    cases = out / "predict_cases"
    if not cases.is_dir():  # larger cases: nnU-Net's sliding window over several patch positions
        write_rods_and_discs_dataset(out / "cases_raw", dataset_id + 1, name, num_train=3, num_test=0,
                                     shape=[args.nnunet_case_size] * 3)
        (out / "cases_raw" / f"Dataset{dataset_id + 1}_{name}" / "imagesTr").rename(cases)
    if not (out / "nnUNet_preprocessed" / dataset.name / "nnUNetPlans.json").is_file():
        run_command({**env, "nnUNet_n_proc_DA": "1"}, "nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c",
                    "3d_fullres", "-np", "1", log=log)
    one = out / "predict_one_case"
    one.mkdir(exist_ok=True)
    first = min(cases.glob("*.nii.gz"))
    if not (one / first.name).exists():
        (one / first.name).symlink_to(first)
    rows = []
    for base in args.nnunet_trainers.split(","):
        trainer = schedule_trainer(out / "trainers", base, 3, args.nnunet_iterations)
        fold = out / "nnUNet_results" / dataset.name / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
        if not (fold / "checkpoint_final.pth").is_file():
            run_command(env, "nnUNetv2_train", dataset_id, "3d_fullres", "0", "-tr", trainer, "-device", args.device,
                        log=log)
        seconds = {}
        for label, images in (("one", one), ("three", cases)):
            predictions = out / "predictions" / f"{trainer}_{label}"
            seconds[label] = run_command(env, "nnUNetv2_predict", "-i", images, "-o", predictions, "-d", dataset_id,
                                         "-c", "3d_fullres", "-tr", trainer, "-f", "0", "-device", args.device,
                                         "-npp", "0", "-nps", "0", log=log)
        rows.append({"trainer": base, "epoch_s": training_times(fold).median_epoch_seconds,
                     "case_s": (seconds["three"] - seconds["one"]) / 2})
    stock = next((r for r in rows if r["trainer"] == "nnUNetTrainer"), rows[0])
    print(f"\nnnU-Net's commands ({args.nnunet_size}^3 training images, epochs of {args.nnunet_iterations} "
          f"iterations; {args.nnunet_case_size}^3 cases predicted with each trainer's test-time mirroring; "
          f"work folder {out}):\n")
    print(f"| trainer | epoch (s) | x {stock['trainer']} | case predict (s) | x {stock['trainer']} |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['trainer']} | {r['epoch_s']:.1f} | {r['epoch_s'] / stock['epoch_s']:.2f} | {r['case_s']:.1f} | "
              f"{r['case_s'] / stock['case_s']:.2f} |")


if __name__ == "__main__":
    main()
