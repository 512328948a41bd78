"""What a trainer costs: parameters, train-step time and peak memory at its plans' patch and batch size, and
epoch times read back from nnU-Net's own training logs.

Train step (:func:`measure_train_step`): the trainer class is built from the model folder's plans and
``dataset.json`` exactly as ``nnUNetv2_train`` builds it (``__init__`` then ``initialize()``: its network,
optimizer, loss, AMP grad scaler on CUDA and ``torch.compile`` where nnU-Net would compile), and its own
``train_step`` runs on a random batch of ``(batch_size, channels, *patch_size)`` with deep-supervision
targets of the sizes nnU-Net's data loader makes. The trainer's log file and folders go to a scratch
``nnUNet_results``, never into the user's results. Time: median of ``repeats`` steps after one warm-up step.

Peak memory of a train step, counted from just before the network is built (so it includes the weights,
their gradients, the optimizer's state, the batch, activations and temporaries):

- CUDA: ``torch.cuda.max_memory_allocated`` (the caching allocator's peak, what decides whether it fits);
- CPU: the process's resident peak (``VmHWM``, reset through ``/proc/self/clear_refs``) with glibc's malloc
  returning every block over 64 KiB to the system on free (``mallopt(M_MMAP_THRESHOLD)``), so the resident
  size follows the live tensors. That setting slows later large allocations, so measure memory after all
  timings (:func:`measure_train_step` with ``measure="memory"``). Linux with glibc only; elsewhere NaN.

Epoch times (:func:`training_times`): ``epoch_start_timestamps`` / ``epoch_end_timestamps`` in the
``logging`` dict of ``checkpoint_final.pth``, else the ``Epoch time: X s`` lines of ``training_log_*.txt``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["TrainStepCost", "TrainingTimes", "measure_train_step", "training_times", "count_parameters",
           "memory_kind", "process_status_bytes"]

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


@dataclass
class TrainStepCost:
    """One trainer's train step at its plans' ``patch_size`` and ``batch_size``; unmeasured fields are NaN."""

    parameters: int
    patch_size: tuple[int, ...]
    batch_size: int
    step_seconds: float = float("nan")
    peak_memory_mib: float = float("nan")


@dataclass
class TrainingTimes:
    """Per fold: epochs trained, median epoch time and total training time (seconds), and where they came
    from; and the learning curve: training seconds at the end of each epoch (cumulative, epoch times only:
    not the set-up and the final validation) with nnU-Net's pseudo Dice of that epoch (mean foreground
    Dice of its validation iterations) and its EMA (nnU-Net's ``ema_fg_dice``: 0.9 old + 0.1 new), and the
    per-label pseudo Dice of every epoch (``epochs x foreground labels``, nnU-Net's label order), empty
    where the logs have none."""

    epochs: int
    median_epoch_seconds: float
    total_seconds: float
    source: str
    curve_seconds: tuple[float, ...] = ()
    pseudo_dice: tuple[float, ...] = ()
    ema_pseudo_dice: tuple[float, ...] = ()
    pseudo_dice_per_label: tuple[tuple[float, ...], ...] = ()


def memory_kind(device) -> str:
    return "CUDA peak allocated" if _device(device).type == "cuda" else "CPU resident peak"


def count_parameters(network) -> int:
    return sum(p.numel() for p in network.parameters())


def _device(device):
    import torch

    return torch.device(device) if not isinstance(device, torch.device) else device


@contextlib.contextmanager
def _scratch_results():
    """``nnUNet_results`` pointing at a temporary folder (nnU-Net reads it from the environment at use)."""
    previous = os.environ.get("nnUNet_results")
    with tempfile.TemporaryDirectory(prefix="nnunet_equivariant_cost_") as scratch:
        os.environ["nnUNet_results"] = scratch
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("nnUNet_results", None)
            else:
                os.environ["nnUNet_results"] = previous


def _build_trainer(trainer_class, plans: dict, configuration: str, dataset_json: dict, device):
    plans = copy.deepcopy(plans)
    plans["continue_training"] = False  # nnU-Net's get_trainer_from_args adds it; __init__ pops it
    with contextlib.redirect_stdout(io.StringIO()):  # citation banner, "Using device"
        trainer = trainer_class(plans=plans, configuration=configuration, fold=0, dataset_json=dataset_json,
                                device=_device(device))
    return trainer


def _random_batch(trainer) -> dict:
    """A batch shaped like nnU-Net's data loader output after its transforms (values do not matter for cost)."""
    import torch

    cm, lm = trainer.configuration_manager, trainer.label_manager
    patch = [int(p) for p in cm.patch_size]
    b = cm.batch_size
    data = torch.randn(b, trainer.num_input_channels, *patch)
    scales = trainer._get_deep_supervision_scales() if trainer.enable_deep_supervision else [[1.0] * len(patch)]
    generator = torch.Generator().manual_seed(0)
    targets = []
    for s in scales:
        shape = [round(p * f) for p, f in zip(patch, s)]  # DownsampleSegForDSTransform's rounding
        if lm.has_regions:
            targets.append(torch.randint(0, 2, (b, len(lm.foreground_regions), *shape), generator=generator).float())
        else:
            targets.append(torch.randint(0, lm.num_segmentation_heads, (b, 1, *shape), generator=generator).float())
    return {"data": data, "target": targets if trainer.enable_deep_supervision else targets[0]}


def measure_train_step(trainer_class, plans: dict, configuration: str, dataset_json: dict, device,
                       measure: str = "time", repeats: int = 3) -> TrainStepCost:
    """Build ``trainer_class`` as ``nnUNetv2_train`` does and run its ``train_step`` on a random batch.

    ``measure``: ``"time"`` (median of ``repeats`` steps after a warm-up step) or ``"memory"`` (the peak of
    one step after a warm-up step, see the module docstring). Returns a :class:`TrainStepCost` with the
    other field NaN.
    """
    import gc

    import torch

    if measure not in ("time", "memory"):
        raise ValueError(f"measure must be 'time' or 'memory', got {measure!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    device = _device(device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with _scratch_results():
        trainer = _build_trainer(trainer_class, plans, configuration, dataset_json, device)
        if measure == "memory":
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
                baseline = torch.cuda.memory_allocated(device)
            else:
                baseline = _cpu_memory_baseline()
        with contextlib.redirect_stdout(io.StringIO()):
            trainer.initialize()
        trainer.network.train()
        batch = _random_batch(trainer)
        cost = TrainStepCost(count_parameters(trainer.network), tuple(int(p) for p in trainer.configuration_manager.patch_size),
                             int(trainer.configuration_manager.batch_size))
        trainer.train_step(batch)  # warm-up: kernels, caches, optimizer state, compilation
        sync()
        if measure == "time":
            times = []
            for _ in range(repeats):
                sync()
                start = time.perf_counter()
                trainer.train_step(batch)
                sync()
                times.append(time.perf_counter() - start)
            cost.step_seconds = statistics.median(times)
        elif cuda:
            torch.cuda.reset_peak_memory_stats(device)
            trainer.train_step(batch)
            sync()
            cost.peak_memory_mib = (torch.cuda.max_memory_allocated(device) - baseline) / 2 ** 20
        elif baseline is not None:
            _reset_resident_peak()
            trainer.train_step(batch)
            cost.peak_memory_mib = (process_status_bytes("VmHWM") - baseline) / 2 ** 20
        del trainer, batch
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return cost


def process_status_bytes(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def _reset_resident_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux >= 4.0: reset VmHWM to the current resident size


def _cpu_memory_baseline() -> int | None:
    """Make freed large blocks go back to the system, trim the heap, return the resident size; ``None``
    where this cannot be measured (no glibc or no ``/proc/self/clear_refs``)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024):
            return None
        libc.malloc_trim(0)
        _reset_resident_peak()
        return process_status_bytes("VmRSS")
    except (OSError, AttributeError):
        return None


def training_times(fold_folder: str | os.PathLike, checkpoint: dict | None = None) -> TrainingTimes | None:
    """Epoch times of one trained fold from ``checkpoint["logging"]`` (pass the loaded
    ``checkpoint_final.pth``), else from the newest ``training_log_*.txt`` with epoch times; ``None`` if
    neither has any."""
    logging = (checkpoint or {}).get("logging") or {}
    starts, ends = logging.get("epoch_start_timestamps") or [], logging.get("epoch_end_timestamps") or []
    durations = [e - s for s, e in zip(starts, ends)]
    dice = [float(d) for d in logging.get("mean_fg_dice") or []]
    per_label = [[float(v) for v in d] for d in logging.get("dice_per_class_or_region") or []]
    source = "checkpoint_final.pth logging"
    if not durations:
        # newest first by modification time (nnU-Net's log names do not zero-pad month and day)
        for log in sorted(Path(fold_folder).glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime, reverse=True):
            text = log.read_text(errors="replace")
            durations = [float(t) for t in re.findall(r"Epoch time: ([0-9.]+) s", text)]
            if durations:
                # nnU-Net's mean_fg_dice: the nan-mean of the per-label pseudo Dice it printed
                per_label = list(map(_pseudo_dice, re.findall(r"Pseudo dice \[([^\]]*)\]", text)))
                dice = [float(np.nanmean(d)) if np.isfinite(d).any() else float("nan") for d in per_label]
                source = log.name
                break
    if not durations:
        return None
    n = min(len(durations), len(dice))
    ema = [float(e) for e in logging.get("ema_fg_dice") or []][:n] if "ema_fg_dice" in logging else _ema(dice[:n])
    return TrainingTimes(len(durations), float(np.median(durations)), float(np.sum(durations)), source,
                         tuple(float(t) for t in np.cumsum(durations[:n])), tuple(dice[:n]), tuple(ema),
                         tuple(tuple(d) for d in per_label[:n]))


def _pseudo_dice(listed: str) -> list[float]:
    """The numbers of nnU-Net's logged ``Pseudo dice [...]`` list (``0.5`` or numpy 2's ``np.float32(0.5)``)."""
    return [float(v) for v in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan",
                                         re.sub(r"np\.float\d+\(", "", listed))]


def _ema(values: list[float]) -> list[float]:
    """nnU-Net's EMA of the pseudo Dice (``nnUNetTrainer.on_epoch_end``): the first value, then 0.9 old + 0.1 new."""
    out = []
    for v in values:
        out.append(v if not out else 0.9 * out[-1] + 0.1 * v)
    return out
