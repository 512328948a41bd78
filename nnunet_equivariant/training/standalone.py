"""An nnU-Net trainer set up exactly as ``nnUNetv2_train`` sets it up, from in-memory plans and without a
preprocessed dataset: for the tests and the benchmark of the GPU path (``torch.compile``, autocast with a
``GradScaler``, DDP) on any device, the CPU included.

What is nnU-Net's own here: the trainer's ``__init__``, ``initialize`` (network from
``build_network_architecture``, ``torch.compile``, optimiser, DDP wrapper, deep-supervision loss with its
compiled Dice) and ``train_step`` (autocast, ``GradScaler``, gradient clipping, optimiser step). What this
module changes, each only where nnU-Net hard-wires CUDA:

- ``compile=True`` makes ``_do_i_compile`` say yes on the CPU too (nnU-Net compiles whenever the device
  is CUDA unless ``nnUNet_compile`` says otherwise, never on the CPU);
- :func:`autocast_on_cpu` puts nnU-Net's own ``train_step`` under CPU autocast (it autocasts only on CUDA);
- under an initialised process group (DDP) the trainer moves itself to ``cuda:<rank>``; on the CPU it is
  moved back, and nnU-Net's ``DDP(network, device_ids=[rank])`` is given ``device_ids=None``, which is
  what DDP needs for a CPU module (gloo).

Batches are nnU-Net's: ``{"data": (batch, channels, *patch), "target": [(batch, 1, *patch_at_scale), ...]}``
with the targets at the trainer's deep-supervision scales (nearest-neighbour), labels from
:func:`~nnunet_equivariant.synthetic.render_case` (rods and discs).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

__all__ = ["plans_with", "standalone_trainer", "synthetic_batch", "autocast_on_cpu", "unwrap"]

_TRAINER_MODULE = "nnunetv2.training.nnUNetTrainer.nnUNetTrainer"
CONFIGURATION = "3d_fullres"
DATASET_NAME = "Dataset999_Standalone"


def plans_with(configuration: dict, batch_dice: bool = False) -> dict:
    """nnU-Net plans (the ``nnUNetPlans.json`` dict) holding one ``3d_fullres`` ``configuration`` (a dict
    as the planner writes it, or a ``ConfigurationManager``; ``patch_size`` and ``spacing`` required)."""
    configuration = dict(getattr(configuration, "configuration", configuration))
    for key in ("patch_size", "spacing"):
        if key not in configuration:
            raise ValueError(f"the configuration needs {key!r} to train; it has {sorted(configuration)}")
    configuration.setdefault("batch_dice", batch_dice)
    configuration.setdefault("preprocessor_name", "DefaultPreprocessor")
    configuration.setdefault("use_mask_for_norm", [False])
    configuration.setdefault("normalization_schemes", ["ZScoreNormalization"])
    configuration.setdefault("resampling_fn_data", "resample_data_or_seg_to_shape")
    configuration.setdefault("resampling_fn_seg", "resample_data_or_seg_to_shape")
    configuration.setdefault("resampling_fn_probabilities", "resample_data_or_seg_to_shape")
    for key in ("resampling_fn_data_kwargs", "resampling_fn_seg_kwargs", "resampling_fn_probabilities_kwargs"):
        configuration.setdefault(key, {"is_seg": "seg" in key, "order": 1 if "seg" not in key else 0,
                                       "order_z": 0, "force_separate_z": None})
    spacing = list(configuration["spacing"])
    return {
        "dataset_name": DATASET_NAME, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": list(configuration["patch_size"]),
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: configuration},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 1.0, "mean": 0.5, "median": 0.5, "min": 0.0, "percentile_00_5": 0.0,
            "percentile_99_5": 1.0, "std": 0.2}},
    }


def _dataset_json(num_classes: int) -> dict:
    labels = {"background": 0, "rod": 1, "disc": 2, **{f"class{i}": i for i in range(3, num_classes)}}
    return {"channel_names": {"0": "synthetic"}, "labels": dict(list(labels.items())[:num_classes]),
            "numTraining": 1, "file_ending": ".nii.gz"}


def _cpu_ddp(module: torch.nn.Module, device_ids=None, **kwargs):
    """nnU-Net's ``DDP(network, device_ids=[rank])`` for a module on the CPU, where DDP wants none."""
    from torch.nn.parallel import DistributedDataParallel

    on_cpu = all(p.device.type == "cpu" for p in module.parameters())
    return DistributedDataParallel(module, device_ids=None if on_cpu else device_ids, **kwargs)


@contextlib.contextmanager
def _environment(**variables: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def standalone_trainer(trainer_class: type, configuration: dict, work_dir: str | os.PathLike,
                       device: torch.device | str = "cpu", compile: bool = True, num_classes: int = 3,
                       fold: int = 0):
    """An initialised ``trainer_class`` (nnU-Net's ``__init__`` and ``initialize``) for ``configuration``
    (see :func:`plans_with`) on ``device``, its logs and output under ``work_dir``.

    ``compile``: ``torch.compile`` the network (and nnU-Net's Dice) as nnU-Net does on CUDA, on any device.
    Under an initialised ``torch.distributed`` process group the trainer is nnU-Net's DDP trainer (batch
    split over the ranks, the network wrapped in DDP after compilation); on the CPU with ``gloo``."""
    import importlib

    import torch.distributed as dist

    device = torch.device(device)
    work_dir = Path(work_dir)
    preprocessed = work_dir / "nnUNet_preprocessed" / DATASET_NAME
    data_folder = preprocessed / "standalone"
    data_folder.mkdir(parents=True, exist_ok=True)
    # nnU-Net infers its dataset class from the file endings in the data folder; no case is ever loaded
    (data_folder / "none.b2nd").touch()
    plans = plans_with(configuration)
    plans["configurations"][CONFIGURATION]["data_identifier"] = "standalone"
    plans["continue_training"] = False  # what nnunetv2.run.run_training adds before constructing the trainer

    # nnU-Net decides to compile in _do_i_compile (never on the CPU); the subclass keeps the trainer's name
    cls = type(trainer_class.__name__, (trainer_class,), {"_do_i_compile": lambda self: bool(compile),
                                                          "__module__": trainer_class.__module__})
    ddp = dist.is_available() and dist.is_initialized()
    module = importlib.import_module(_TRAINER_MODULE)
    with _environment(nnUNet_preprocessed=str(work_dir / "nnUNet_preprocessed"),
                      nnUNet_results=str(work_dir / f"nnUNet_results_rank{dist.get_rank() if ddp else 0}")), \
            contextlib.redirect_stdout(open(os.devnull, "w")):
        trainer = cls(plans, CONFIGURATION, fold, _dataset_json(num_classes), device)
        if trainer.device.type != device.type:  # nnU-Net's DDP trainer moved itself to cuda:<rank>
            trainer.device = torch.device(device.type, trainer.local_rank) if device.type == "cuda" else device
            trainer.grad_scaler = None if device.type != "cuda" else trainer.grad_scaler
        original_ddp = module.DDP
        module.DDP = _cpu_ddp if device.type == "cpu" else original_ddp
        try:
            trainer.initialize()
        finally:
            module.DDP = original_ddp
        trainer.set_deep_supervision_enabled(True)
    return trainer


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The plain network inside nnU-Net's DDP and ``torch.compile`` wrappers."""
    from torch._dynamo.eval_frame import OptimizedModule
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(network, DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network


def synthetic_batch(trainer, seed: int, batch_size: int | None = None) -> dict:
    """One nnU-Net training batch for ``trainer`` (its batch size, patch and deep-supervision scales), rods
    and discs in random orientations with noise, z-scored like nnU-Net's normalisation."""
    from ..synthetic import RodsAndDiscs, render_case

    patch = tuple(int(p) for p in trainer.configuration_manager.patch_size)
    spacing = tuple(float(s) for s in trainer.configuration_manager.spacing)
    scale = min(p * s for p, s in zip(patch, spacing)) / 48.0  # the shapes' defaults fit a 48 mm volume
    geometry = RodsAndDiscs(rod_length=14.0 * scale, rod_radius=max(1.6 * scale, 1.0),
                            disc_radius=5.0 * scale, disc_thickness=max(2.4 * scale, 1.5))
    rng = np.random.default_rng(seed)
    cases = [render_case(patch, spacing, rng, orientation="random", geometry=geometry)
             for _ in range(batch_size or trainer.batch_size)]
    images = np.stack([c[0] for c in cases])[:, None]
    images = (images - images.mean()) / (images.std() + 1e-8)
    labels = torch.from_numpy(np.stack([c[1] for c in cases])[:, None].astype(np.float32))
    labels = labels.clamp(max=trainer.label_manager.num_segmentation_heads - 1)
    scales = trainer._get_deep_supervision_scales() or [[1.0] * len(patch)]
    targets = [torch.nn.functional.interpolate(labels, size=[round(p * s) for p, s in zip(patch, sc)],
                                               mode="nearest-exact") for sc in scales]
    return {"data": torch.from_numpy(images.astype(np.float32)), "target": targets}


@contextlib.contextmanager
def autocast_on_cpu(dtype: torch.dtype, grad_scaler: bool = True, trainer=None) -> Iterator[None]:
    """Run nnU-Net's own ``train_step`` / ``validation_step`` under CPU autocast in ``dtype`` (nnU-Net
    autocasts only on CUDA; on other devices it enters ``dummy_context``, which this replaces), and with
    ``grad_scaler`` give ``trainer`` a ``torch.amp.GradScaler("cpu")`` as nnU-Net gives a CUDA trainer."""
    import importlib

    module = importlib.import_module(_TRAINER_MODULE)
    original, scaler = module.dummy_context, None if trainer is None else trainer.grad_scaler
    module.dummy_context = lambda: torch.autocast("cpu", dtype=dtype)
    if trainer is not None and grad_scaler:
        trainer.grad_scaler = torch.amp.GradScaler("cpu")
    try:
        yield
    finally:
        module.dummy_context = original
        if trainer is not None:
            trainer.grad_scaler = scaler
