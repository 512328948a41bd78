"""``nnUNetPlannerEquivariant``: isotropic plans on which every network of this plugin and stock nnU-Net train.

One configuration, ``3d_fullres``, in plans ``nnUNetPlansEquivariant``:

- **Spacing**: isotropic, the geometric mean of the dataset's median spacing, ``s = (s_x s_y s_z)^(1/3)``.
  The median case keeps its number of voxels (compute per case as in stock nnU-Net) while every voxel
  becomes a cube, which steerable kernels and the grid's 90-degree symmetries need. Anisotropic data are
  resampled: 0.8 x 0.8 x 5 mm becomes 1.49 mm. Images are resampled with cubic and segmentations with
  linear interpolation along all three axes alike (nnU-Net's separate nearest-neighbour z resampling would
  leave staircases that a rotation turns into a pose cue). ``overwrite_target_spacing`` must be isotropic.
- **Topology**: isotropic 2x pooling on every axis, as often as the patch's shortest axis keeps a
  bottleneck of at least 4 voxels; cubic kernels of the spec's size (3 x 3 x 3 for the default trainer's and
  ``spec=None``, 5 x 5 x 5 for the paper's network) in every stage; nnU-Net's widths (32 doubling up to
  320) and two convolutions per stage. ``network_class_name`` stays ``PlainConvUNet`` so stock trainers
  (and the rotation baselines) build a ``PlainConvUNet`` with the same kernels from the same plans, while the steerable and
  mirror trainers build their networks from the same topology.
- **Patch and batch**: the patch is divisible by 2^pools on every axis. It starts as nnU-Net's (a cube of
  256^3 voxels clipped to the median image shape) and its axis that is largest relative to the median
  shape shrinks until a training step at batch size 2 fits ``gpu_memory_target_in_gb`` for the largest
  network training on the plans (``E3nnUNet`` or the ``PlainConvUNet``, see ``memory.py``); the batch
  size then grows while it fits, capped as nnU-Net caps it (5 % of the dataset's voxels per batch).
  The ``E3nnUNet`` sized for is the one of the planner's ``spec`` (``E3nnSpec``; the default is
  ``nnUNetTrainerE3nn``'s, ``COMPACT_SPEC``): ``plan_and_preprocess -tr nnUNetTrainerE3nnLean`` passes that trainer's spec, so
  the plans fit the network it will actually train (a wider variant such as ``nnUNetTrainerE3nn_4x4x4``
  needs more memory per voxel, the lean one less). ``spec=None`` sizes for the ``PlainConvUNet`` alone
  (stock and mirror trainers). The spec the plans were sized for is stored in the configuration
  (``"equivariant_sizing"``); the steerable trainers log a warning when theirs differs. The planner builds
  networks through ``nnunet_equivariant.networks``, never through a trainer.
- **ResEnc presets** (``preset="M"``, ``"L"``, ``"XL"``): nnU-Net's recommended residual-encoder presets on
  the same isotropic grid. The architecture is a ``ResidualEncoderUNet`` with nnU-Net's ResEnc blocks per
  stage (1, 3, 4, 6, 6, ...), one decoder convolution per stage and nnU-Net's 3^3 kernels, so stock
  trainers build nnU-Net's own residual encoder, the steerable trainers an ``E3nnResEncUNet`` (kernels of
  the spec's size) and the mirror trainers a ``MirrorResEncUNet``; the memory target defaults to the preset's (8, 24, 40 GB, as
  ``nnUNetPlannerResEnc{M,L,XL}``) and is met by the largest of the stock and the steerable residual
  network. Plans ``nnUNetPlansEquivariantResEnc{M,L,XL}`` keep their own preprocessed data (nnU-Net's
  ResEnc plans share ``nnUNetPlans``'; here a different ``overwrite_target_spacing`` per plans would then
  silently mix spacings).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
from torch import nn

from ..networks.e3nn_spec import COMPACT_SPEC, E3nnSpec
from ..networks.e3nn_unet import e3nn_unet_from_plans
from .memory import estimate_training_bytes

__all__ = ["nnUNetPlannerEquivariant", "PLANS_IDENTIFIER", "RESENC_PRESETS", "SIZING_KEY", "isotropic_architecture",
           "networks_on_plans", "plans_identifier"]

PLANS_IDENTIFIER = "nnUNetPlansEquivariant"
#: nnU-Net's residual-encoder presets and their memory targets in GB (``nnUNetPlannerResEnc{M,L,XL}``).
RESENC_PRESETS = {"M": 8.0, "L": 24.0, "XL": 40.0}
#: Residual blocks per encoder stage and convolutions per decoder stage of nnU-Net's ``ResEncUNetPlanner``.
RESENC_BLOCKS_PER_STAGE = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)
RESENC_CONV_PER_STAGE_DECODER = 1
#: The ResEnc presets' plans keep nnU-Net's 3^3 kernels: stock trainers train nnU-Net's own residual encoder
#: (with 5^3 kernels it would hold 467 M parameters at 6 stages); steerable kernels are sized by the spec.
RESENC_KERNEL_SIZE = 3
#: Configuration entry that records what the plans were sized for: ``{"trainer": name, "spec": dict | None}``.
SIZING_KEY = "equivariant_sizing"


def plans_identifier(preset: str | None = None) -> str:
    """``nnUNetPlansEquivariant``, or ``nnUNetPlansEquivariantResEnc{M,L,XL}`` for a ResEnc preset."""
    if preset is None:
        return PLANS_IDENTIFIER
    if preset not in RESENC_PRESETS:
        raise ValueError(f"preset must be one of {list(RESENC_PRESETS)} (nnU-Net's ResEnc presets) or None, "
                         f"got {preset!r}")
    return f"{PLANS_IDENTIFIER}ResEnc{preset}"


def isotropic_architecture(n_stages: int, base_features: int = 32, max_features: int = 320,
                           kernel_size: int = COMPACT_SPEC.kernel_size, residual: bool = False) -> dict:
    """The plans' ``architecture`` entry: a ``PlainConvUNet`` with isotropic 2x pooling and cubic kernels, or
    with ``residual`` nnU-Net's ``ResidualEncoderUNet`` with its ResEnc presets' blocks per stage."""
    if residual:
        name, depth = "ResidualEncoderUNet", {"n_blocks_per_stage": list(RESENC_BLOCKS_PER_STAGE[:n_stages]),
                                              "n_conv_per_stage_decoder": [RESENC_CONV_PER_STAGE_DECODER] * (n_stages - 1)}
    else:
        name, depth = "PlainConvUNet", {"n_conv_per_stage": [2] * n_stages, "n_conv_per_stage_decoder": [2] * (n_stages - 1)}
    return {
        "network_class_name": f"dynamic_network_architectures.architectures.unet.{name}",
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": [min(max_features, base_features * 2 ** i) for i in range(n_stages)],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[kernel_size] * 3 for _ in range(n_stages)],
            "strides": [[1, 1, 1]] + [[2, 2, 2] for _ in range(n_stages - 1)],
            **depth,
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def networks_on_plans(configuration: dict, num_input_channels: int, num_output_channels: int,
                      spec: E3nnSpec | None = COMPACT_SPEC) -> dict[str, nn.Module]:
    """The networks that train on a configuration of these plans, with deep supervision and on the CPU, by
    class name: the stock network it names (``PlainConvUNet``, or ``ResidualEncoderUNet`` for a ResEnc
    preset) and, unless ``spec`` is ``None``, the steerable network of ``spec`` (a steerable trainer's
    ``spec``) on them (``E3nnUNet`` or ``E3nnResEncUNet``)."""
    manager = ConfigurationManager(configuration)
    stock = get_network_from_plans(
        manager.network_arch_class_name, manager.network_arch_init_kwargs,
        manager.network_arch_init_kwargs_req_import, num_input_channels, num_output_channels, allow_init=False,
        deep_supervision=True)
    networks = {type(stock).__name__: stock}
    if spec is not None:
        steerable = e3nn_unet_from_plans(manager, spec, num_input_channels, num_output_channels, deep_supervision=True)
        networks[type(steerable).__name__] = steerable
    return networks


class nnUNetPlannerEquivariant(ExperimentPlanner):
    """Isotropic 3d_fullres plans with the spec's cubic kernels, sized for the steerable network of ``spec``
    and the stock network (module docstring). ``trainer_name`` is recorded with the spec. ``preset``:
    ``None`` (``PlainConvUNet`` plans) or nnU-Net's ResEnc ``"M"``, ``"L"``, ``"XL"``; it names the plans
    (``plans_name=None``) and the memory target (``gpu_memory_target_in_gb=None``: 8 GB, or the preset's)."""

    def __init__(self, dataset_name_or_id: str | int, gpu_memory_target_in_gb: float | None = None,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str | None = None,
                 overwrite_target_spacing: Sequence[float] | None = None, suppress_transpose: bool = False,
                 spec: E3nnSpec | None = COMPACT_SPEC, trainer_name: str = "nnUNetTrainerE3nn",
                 preset: str | None = None):
        plans_name = plans_identifier(preset) if plans_name is None else plans_name
        if gpu_memory_target_in_gb is None:
            gpu_memory_target_in_gb = 8.0 if preset is None else RESENC_PRESETS[preset]
        if gpu_memory_target_in_gb <= 0:
            raise ValueError(f"gpu_memory_target_in_gb must be positive, got {gpu_memory_target_in_gb}")
        if spec is not None and not isinstance(spec, E3nnSpec):
            raise ValueError(f"spec must be an E3nnSpec or None, got {type(spec).__name__}")
        if overwrite_target_spacing is not None and len(set(map(float, overwrite_target_spacing))) != 1:
            raise ValueError(f"the equivariant plans need an isotropic target spacing, got {overwrite_target_spacing}")
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.lowres_creation_threshold = 0  # no 3d_lowres / cascade: one isotropic configuration
        self.spec, self.trainer_name = spec, trainer_name  # the steerable network the plans are sized for
        self.kernel_size = COMPACT_SPEC.kernel_size if spec is None else spec.kernel_size
        self.preset = preset

    def determine_fullres_target_spacing(self) -> np.ndarray:
        if self.overwrite_target_spacing is not None:
            return np.array(self.overwrite_target_spacing, dtype=np.float64)
        median = np.median(np.vstack(self.dataset_fingerprint["spacings"]), 0)
        return np.full(3, float(np.prod(median) ** (1 / 3)))

    def determine_resampling(self, *args, **kwargs):
        data, data_kwargs, seg, seg_kwargs = super().determine_resampling(*args, **kwargs)
        return data, {**data_kwargs, "force_separate_z": False}, seg, {**seg_kwargs, "force_separate_z": False}

    def determine_segmentation_softmax_export_fn(self, *args, **kwargs):
        fn, fn_kwargs = super().determine_segmentation_softmax_export_fn(*args, **kwargs)
        return fn, {**fn_kwargs, "force_separate_z": False}

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier: str,
                                    approximate_n_voxels_dataset: float, _cache: dict) -> dict:
        if len(spacing) != 3:  # nnU-Net's plan_experiment asks for a 2d plan too: not planned, dropped by save_plans
            return {}
        median_shape = np.asarray(median_shape, dtype=np.float64)
        target = self.UNet_vram_target_GB * 1024 ** 3
        patch = np.minimum(256, np.round(median_shape)).astype(np.int64)
        while True:
            n_pool = self._num_poolings(patch)
            divisor = 2 ** n_pool
            patch = (np.ceil(patch / divisor) * divisor).astype(np.int64)
            residual = self.preset is not None
            configuration = {"architecture": isotropic_architecture(
                n_pool + 1, kernel_size=RESENC_KERNEL_SIZE if residual else self.kernel_size, residual=residual),
                             "patch_size": patch.tolist(),
                             "spacing": [float(s) for s in spacing]}
            per_batch = self._training_bytes(configuration, patch, _cache)
            if per_batch(self.UNet_min_batch_size) <= target:
                break
            axis = int(np.argmax(patch / median_shape))
            if patch[axis] - divisor < 2 * self.UNet_featuremap_min_edge_length:
                raise ValueError(
                    f"{self.dataset_name}: even a patch of {patch.tolist()} needs "
                    f"{per_batch(self.UNet_min_batch_size) / 1024 ** 3:.1f} GB at batch size "
                    f"{self.UNet_min_batch_size}, above the memory target of {self.UNet_vram_target_GB} GB")
            patch[axis] -= divisor

        # the largest batch that fits, capped as nnU-Net caps it (at most 5 % of the dataset's voxels per batch)
        five_percent = round(approximate_n_voxels_dataset * self.max_dataset_covered / np.prod(patch, dtype=np.float64))
        batch_size = self.UNet_min_batch_size
        while batch_size < five_percent and per_batch(batch_size + 1) <= target:
            batch_size += 1

        resampling_data, resampling_data_kwargs, resampling_seg, resampling_seg_kwargs = self.determine_resampling()
        resampling_softmax, resampling_softmax_kwargs = self.determine_segmentation_softmax_export_fn()
        normalization_schemes, mask_is_used_for_norm = \
            self.determine_normalization_scheme_and_whether_mask_is_used_for_norm()
        return {
            "data_identifier": data_identifier,
            "preprocessor_name": self.preprocessor_name,
            "batch_size": batch_size,
            "patch_size": patch.tolist(),
            "median_image_size_in_voxels": median_shape,
            "spacing": np.asarray(spacing, dtype=np.float64),  # an array, as nnU-Net's plan_experiment expects
            "normalization_schemes": normalization_schemes,
            "use_mask_for_norm": mask_is_used_for_norm,
            "resampling_fn_data": resampling_data.__name__,
            "resampling_fn_seg": resampling_seg.__name__,
            "resampling_fn_data_kwargs": resampling_data_kwargs,
            "resampling_fn_seg_kwargs": resampling_seg_kwargs,
            "resampling_fn_probabilities": resampling_softmax.__name__,
            "resampling_fn_probabilities_kwargs": resampling_softmax_kwargs,
            "architecture": configuration["architecture"],
            SIZING_KEY: {"trainer": self.trainer_name, "spec": None if self.spec is None else self.spec.to_dict()},
        }

    def _num_poolings(self, patch: np.ndarray) -> int:
        """Isotropic 2x poolings that keep the shortest axis at least ``UNet_featuremap_min_edge_length``."""
        return max(1, int(np.floor(np.log2(patch.min() / self.UNet_featuremap_min_edge_length))))

    def _training_bytes(self, configuration: dict, patch: np.ndarray, cache: dict):
        """``batch_size -> bytes`` of a training step of the largest network on this configuration."""
        key = ("equivariant", self.preset, configuration["architecture"]["arch_kwargs"]["n_stages"])
        if key not in cache:
            cache[key] = networks_on_plans(configuration, len(self.dataset_json["channel_names"]),
                                           len(self.dataset_json["labels"]), self.spec)
        networks = cache[key].values()
        return lambda batch: max(estimate_training_bytes(n, patch, batch) for n in networks)

    def save_plans(self, plans: dict) -> None:
        """Keep only ``3d_fullres`` (nnU-Net's plan_experiment also asks for a 2d configuration)."""
        plans["configurations"] = {"3d_fullres": plans["configurations"]["3d_fullres"]}
        super().save_plans(plans)
