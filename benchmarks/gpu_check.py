"""The GPU path as nnU-Net runs it, per trainer, in one run that a machine with one GPU finishes in under
8 minutes (issue 18); writes ``docs/benchmarks_gpu.md``.

For each trainer (stock ``nnUNetTrainer``, ``nnUNetTrainerE3nn`` (the default: 3^3 kernels, the steerable
network that learns in stock's seconds on the CPU, docs/offgrid_real_anatomy.md), ``nnUNetTrainerE3nnShells``
(the paper's 5^3 network: whether a GPU makes 5^3 kernels affordable), ``nnUNetTrainerE3nnLean``,
``nnUNetTrainerMirror``) at nnU-Net's default 3d_fullres plans
for a cubic patch at 1 mm (default 128^3: the topology nnU-Net's planner derives, 6 stages, 32..320
features, batch 2), the trainer is set up by nnU-Net's own ``__init__`` / ``initialize`` (``torch.compile``
as nnU-Net does on CUDA, AMP with its ``GradScaler``; :mod:`nnunet_equivariant.training.standalone`, no
dataset on disk) and measured:

- compile time: first training step minus a steady one (dynamo + inductor for forward and backward, and
  nnU-Net's compiled Dice); the first validation step likewise (the eval graph);
- train step (nnU-Net's ``train_step``: autocast, deep-supervision loss, ``GradScaler``, clipping, optimiser)
  and validation step (``validation_step``), medians; epoch-equivalent = 250 train + 50 validation steps
  (nnU-Net's defaults; data loading and augmentation not included: they are the same for every trainer);
- peak GPU memory of a training step (``max_memory_allocated``);
- predict time per case: nnU-Net's ``nnUNetPredictor.predict_sliding_window_return_logits`` (autocast,
  Gaussian tiles at step 0.5, not compiled: ``nnUNetv2_predict``'s default) on a random case of 1.5x the
  patch, with each trainer's own test-time mirroring axes (stock 8 passes, SO(3) 2, f123 1);
- float16 and bfloat16 equivariance error (``testing.autocast_equivariance``, eval, autocast, one patch):
  worst over the generators of the trainer's group (stock: the rotations', it has none), and the deviation from the
  float32 output (stock's value is the rounding every nnU-Net user already accepts).

Targets (one GPU): the default and lean <= 1.1x stock per epoch, the paper's network <= 1.3x (the paper's 518
vs 400 s), predict per case <= stock; printed with PASS / FAIL.

Usage: on a GPU ``python benchmarks/gpu_check.py`` (writes docs/benchmarks_gpu.md);
on the CPU at a small size (what the test suite runs): ``python benchmarks/gpu_check.py --device cpu --small
--out /tmp/x.md`` (no AMP on the CPU, as nnU-Net; ``--compile off`` skips inductor's C++ compilation).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e3nn_stock import configuration  # noqa: E402  nnU-Net's default plans for a cubic patch

TRAINERS = "nnUNetTrainer,nnUNetTrainerE3nn,nnUNetTrainerE3nnShells,nnUNetTrainerE3nnLean,nnUNetTrainerMirror"
# epoch time vs stock: the paper's network 1.3x (its 518 vs 400 s), the default and the lean one 1.1x
TARGETS = {"nnUNetTrainerE3nn": 1.1, "nnUNetTrainerE3nnShells": 1.3, "nnUNetTrainerE3nnLean": 1.1}
ITERATIONS, VAL_ITERATIONS = 250, 50  # nnU-Net's epoch
GPU_COMMAND = "python benchmarks/gpu_check.py  # on a machine with one CUDA GPU, ~5-8 min; writes docs/benchmarks_gpu.md"


def trainer_class(name: str):
    if name == "nnUNetTrainer":
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        return nnUNetTrainer
    from nnunet_equivariant.training import e3nn, mirror
    for module in (e3nn, mirror):
        if hasattr(module, name):
            return getattr(module, name)
    raise ValueError(f"unknown trainer {name!r}; expected nnUNetTrainer or one of this package's trainers")


def group_of(trainer) -> str:
    """The grid group the trainer's network is equivariant to (stock: measured over the rotations)."""
    return getattr(trainer, "symmetry", None) or "so3"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def measure(name: str, patch: int, device: torch.device, compile: bool, steps: int, work: Path,
            small: bool = False) -> dict:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_equivariant.testing import autocast_equivariance
    from nnunet_equivariant.training.standalone import standalone_trainer, synthetic_batch, unwrap

    torch.manual_seed(0)
    config = configuration(patch).configuration
    if small:  # a CPU check: few features (half-precision convolutions on the CPU are ~20x float32's time)
        arch = config["architecture"]["arch_kwargs"]
        arch["features_per_stage"] = [min(8 * 2 ** i, 16) for i in range(arch["n_stages"])]
    trainer = standalone_trainer(trainer_class(name), config, work / name, device=device, compile=compile)
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # sets the test-time mirroring axes
    mirror_axes = trainer.inference_allowed_mirroring_axes
    batches = [synthetic_batch(trainer, seed=s) for s in range(2)]
    result = {"trainer": name, "parameters": sum(p.numel() for p in unwrap(trainer.network).parameters()),
              "mirror_axes": mirror_axes}

    trainer.network.train()
    first = _timed(lambda: trainer.train_step(batches[0]), device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    train = [_timed(lambda: trainer.train_step(batches[i % 2]), device) for i in range(steps)]
    result["peak_memory_gb"] = ((torch.cuda.max_memory_allocated(device) - base) / 1e9
                                if device.type == "cuda" else None)
    result["train_step_s"] = statistics.median(train)
    result["compile_train_s"] = max(first - result["train_step_s"], 0.0)

    print(f"[gpu_check]   train: first step {first:.1f} s, then {result['train_step_s']:.3f} s", flush=True)
    trainer.network.eval()
    with torch.no_grad():
        first_val = _timed(lambda: trainer.validation_step(batches[0]), device)
        val = [_timed(lambda: trainer.validation_step(batches[i % 2]), device) for i in range(max(2, steps // 2))]
    result["val_step_s"] = statistics.median(val)
    result["compile_val_s"] = max(first_val - result["val_step_s"], 0.0)
    result["epoch_s"] = ITERATIONS * result["train_step_s"] + VAL_ITERATIONS * result["val_step_s"]

    # nnUNetv2_predict: the predictor's own sliding window (not compiled by default), this trainer's mirroring
    network = unwrap(trainer.network)
    trainer.set_deep_supervision_enabled(False)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror_axes is not None,
                                perform_everything_on_device=True, device=device, allow_tqdm=False)
    with open(os.devnull, "w") as null, _redirect(null):
        predictor.manual_initialization(network, trainer.plans_manager, trainer.configuration_manager, None,
                                        trainer.dataset_json, name, mirror_axes)
    case = torch.randn(1, *[int(round(1.5 * patch))] * 3)
    predictor.predict_sliding_window_return_logits(case)  # warm-up (kernel caches, cuDNN plans)
    result["predict_s"] = statistics.median(
        _timed(lambda: predictor.predict_sliding_window_return_logits(case), device) for _ in range(2))

    print(f"[gpu_check]   predict per case {result['predict_s']:.2f} s (mirroring axes {mirror_axes})", flush=True)
    x = batches[0]["data"][:1].to(device)
    if small:  # half-precision convolutions on the CPU: an 8^3 crop (still divisible by the poolings)
        x = x[..., :patch // 2, :patch // 2, :patch // 2]
    for key, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        half = autocast_equivariance(network, x, group_of(trainer), dtype)
        result[f"{key}_equivariance"], result[f"{key}_vs_fp32"] = half["equivariance"], half["vs_float32"]
    result["group"] = group_of(trainer)
    del trainer, predictor, network
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


class _redirect:
    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        self.saved, sys.stdout = sys.stdout, self.stream

    def __exit__(self, *exc):
        sys.stdout = self.saved


def verdicts(results: dict[str, dict]) -> list[tuple[str, float, float, bool]]:
    """``(what, ratio, target, passed)`` for every target whose trainers were measured."""
    stock = results.get("nnUNetTrainer")
    if stock is None:
        return []
    out = []
    for name, target in TARGETS.items():
        if name in results:
            ratio = results[name]["epoch_s"] / stock["epoch_s"]
            out.append((f"{name} epoch / stock", ratio, target, ratio <= target))
    for name in results:
        if name != "nnUNetTrainer":
            ratio = results[name]["predict_s"] / stock["predict_s"]
            out.append((f"{name} predict per case / stock", ratio, 1.0, ratio <= 1.0))
    return out


def report(results: dict[str, dict], args, device: torch.device, wall: float) -> str:
    gpu = device.type == "cuda"
    where = torch.cuda.get_device_name(device) if gpu else f"CPU ({platform.processor() or platform.machine()}, " \
                                                           f"{torch.get_num_threads()} threads)"
    lines = [f"### {'GPU' if gpu else 'CPU, small size (a check that the script runs, not a GPU number)'}: "
             f"{where}, patch {args.patch}^3, batch 2, compile {'on' if args.compile else 'off'}, "
             f"AMP {'float16 + GradScaler' if gpu else 'off (nnU-Net on the CPU)'}",
             "",
             f"torch {torch.__version__}; {args.steps} timed steps per trainer; whole run {wall:.0f} s. Command: "
             f"`{' '.join(['python', 'benchmarks/gpu_check.py', *sys.argv[1:]])}`",
             "",
             "| trainer | parameters | compile train / val (s) | train step (s) | val step (s) | epoch-equivalent (s) "
             "| peak memory (GB) | mirroring axes | predict per case (s) | equivariance error float16 / bfloat16 (group) "
             "| float16 / bfloat16 vs float32 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results.values():
        memory = f"{r['peak_memory_gb']:.2f}" if r["peak_memory_gb"] is not None else "n/a (CPU)"
        lines.append(
            f"| {r['trainer']} | {r['parameters'] / 1e6:.2f} M | {r['compile_train_s']:.1f} / {r['compile_val_s']:.1f} "
            f"| {r['train_step_s']:.4f} | {r['val_step_s']:.4f} | {r['epoch_s']:.1f} | {memory} | {r['mirror_axes']} "
            f"| {r['predict_s']:.3f} | {r['fp16_equivariance']:.1e} / {r['bf16_equivariance']:.1e} ({r['group']}) "
            f"| {r['fp16_vs_fp32']:.1e} / {r['bf16_vs_fp32']:.1e} |")
    checks = verdicts(results)
    if checks:
        lines += ["", "| target | ratio | limit | verdict |", "|---|---|---|---|"]
        lines += [f"| {what} | {ratio:.2f}x | <= {target}x | {'PASS' if ok else 'FAIL'} |"
                  for what, ratio, target, ok in checks]
    return "\n".join(lines) + "\n"


HEADER = """# The GPU path: compile, AMP, memory and prediction per trainer (`benchmarks/gpu_check.py`)

{status}

What the script measures and how: see its docstring. Each trainer is set up by nnU-Net's own `initialize`
(`torch.compile`, DDP-free, one GPU) and trained through nnU-Net's own `train_step` (float16 autocast and
`GradScaler` on CUDA) on synthetic batches at nnU-Net's default plans for the patch; prediction is
`nnUNetPredictor`'s sliding window with each trainer's own test-time mirroring. The same code path is
proven on the CPU in the test suite (tests/test_gpu_path.py: inductor step equals eager, no graph break,
compiled eval after `load_state_dict`; tests/test_autocast.py; tests/test_ddp.py: nnU-Net's DDP trainer on
two gloo processes).

Targets on one GPU: the default `nnUNetTrainerE3nn` (3^3) and the lean network <= 1.1x stock per epoch, the
paper's 5^3 network (`nnUNetTrainerE3nnShells`) <= 1.3x (the paper: 518 vs 400 s), predict per case <= stock.

"""

KEEP = "## Proven on the CPU"  # the page's section below the table that a rerun keeps

NO_GPU = """**No GPU run exists yet.** No GPU was available to this work; the table below is the script's run on
the CPU at a small size (a check that it runs end to end; CPU times say nothing about a GPU). On a machine
with one CUDA GPU run, from the repository root:

```
{command}
```

It rewrites this page with the GPU table and the PASS / FAIL of each target."""


def run(argv=None) -> tuple[dict[str, dict], str]:
    """Measure the trainers and write the page; returns the results by trainer and the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true",
                        help="16^3 patch, 8-16 features, 3 timed steps (a CPU check that the script runs)")
    parser.add_argument("--patch", type=int, default=None, help="cubic patch (default 128, --small 16)")
    parser.add_argument("--steps", type=int, default=None, help="timed train steps (default 20, --small 3)")
    parser.add_argument("--compile", choices=["on", "off"], default="on")
    parser.add_argument("--trainers", default=TRAINERS)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "benchmarks_gpu.md"))
    args = parser.parse_args(argv)
    args.patch = args.patch or (16 if args.small else 128)
    args.steps = args.steps or (3 if args.small else 20)
    args.compile = args.compile == "on"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu --small)")
    start = time.time()
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for name in args.trainers.split(","):
            print(f"[gpu_check] {name} ...", flush=True)
            results[name] = measure(name, args.patch, device, args.compile, args.steps, Path(work), args.small)
            print(f"[gpu_check]   {results[name]}", flush=True)
    table = report(results, args, device, time.time() - start)
    status = ("GPU run below." if device.type == "cuda"
              else NO_GPU.format(command=GPU_COMMAND))
    out = Path(args.out)
    kept = out.read_text().split(KEEP, 1) if out.is_file() else []
    notes = KEEP + kept[1] if len(kept) == 2 else ""  # the page's hand-written notes on the CPU proofs stay
    out.write_text(HEADER.format(status=status) + table + ("\n" + notes if notes else ""))
    print(table)
    for what, ratio, target, ok in verdicts(results):
        print(f"{'PASS' if ok else 'FAIL'}: {what} = {ratio:.2f}x (target <= {target}x)")
    print(f"[gpu_check] wrote {args.out}")
    return results, table


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
