"""E3nnUNet: an SO(3)/O(3)-steerable U-Net that follows nnU-Net's network protocol (like ``PlainConvUNet``),
and ``e3nn_unet_from_plans``, the network of an nnU-Net plans configuration."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from e3nn import o3
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from ..layers import GaussianBlur3d, InvariantHead, MeanPool3d, NormMaxPool3d, SteerableConv3d, TrilinearUpsample
from .ddp import skip_constant_buffers_in_ddp
from .e3nn_spec import E3nnSpec

__all__ = ["E3nnUNet", "SpecStateDict", "e3nn_unet_from_plans", "e3nn_unet_kwargs", "RESENC_UNET"]

# nnU-Net's residual-encoder U-Net (its ResEnc M/L/XL plans): built as E3nnResEncUNet (e3nn_resenc_unet.py)
RESENC_UNET = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def _per_stage(value, n: int, name: str) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} must have {n} entries, got {value!r}")
    return values


def _topology(network: str, n_stages: int, strides, spacing) -> tuple[list, tuple, list, tuple]:
    """Checked ``(strides, spacing, stage_spacing, total_stride)`` of a 3D U-Net: per-stage stride triples,
    the input voxel size, each stage's voxel size ``spacing * prod(strides[:s + 1])`` and the product of the
    strides (the divisor of every input size). ``network`` names the caller in errors."""
    if n_stages < 2:
        raise ValueError(f"n_stages must be >= 2 (one pooling at least), got {n_stages}")
    strides = [(s,) * 3 if isinstance(s, int) else tuple(int(v) for v in s)
               for s in _per_stage(strides, n_stages, "strides")]
    spacing = tuple(float(s) for s in spacing)
    if any(len(s) != 3 for s in strides) or len(spacing) != 3:
        raise ValueError(f"{network} is 3D only: strides {strides} and spacing {spacing} must have 3 entries "
                         f"per stage (a 2D configuration cannot be used)")
    if any(min(s) < 1 for s in strides):
        raise ValueError(f"strides must be positive, got {strides}")
    stage_spacing = [tuple(float(v) for v in np.array(spacing) * c) for c in np.cumprod(np.array(strides), axis=0)]
    return strides, spacing, stage_spacing, tuple(int(v) for v in np.prod(np.array(strides), axis=0))


def _blur_passes(blur: GaussianBlur3d) -> int:
    """Activation-sized values a separable blur counts per voxel and channel: 3 per blurred axis (its padded
    input, kept by the depthwise convolution for backward, and temporaries), a count fit to measured peaks:
    with it the anti-aliased network's estimate is 1.03x / 1.06x its measured peak at 32^3 / 48^3 (one per
    axis gave 0.85x / 0.68x; benchmarks/planner_memory.py, docs/planner.md)."""
    return 3 * sum(1 for sigma in blur.sigma if sigma > 0)


def _antialias_blur(stride: Sequence[int], antialias: float) -> list[nn.Module]:
    """``[GaussianBlur3d]`` of ``antialias * stride`` voxels along the resampled axes, or ``[]`` if off."""
    if antialias == 0 or all(s == 1 for s in stride):
        return []
    return [GaussianBlur3d([antialias * s if s > 1 else 0.0 for s in stride])]


class E3nnEncoder(nn.Module):
    """Stages of ``[GaussianBlur3d] -- [pooling(stride)] -- SteerableBlock x n``; returns every stage's
    output (skips). The blur (``antialias * stride`` voxels) is there only with ``antialias > 0``; the pooling
    is ``spec.pooling``'s (``NormMaxPool3d`` by default, ``MeanPool3d`` with ``"mean"``)."""

    def __init__(self, input_irreps: o3.Irreps, stage_irreps: list[o3.Irreps], strides: list[tuple[int, int, int]],
                 stage_spacing: list[tuple[float, float, float]], n_conv_per_stage: list[int], spec: E3nnSpec):
        super().__init__()
        self.strides, self.stage_spacing, self.output_irreps = strides, stage_spacing, stage_irreps
        stages = []
        irreps = input_irreps
        for irreps_stage, stride, spacing, n_conv in zip(stage_irreps, strides, stage_spacing, n_conv_per_stage):
            ops: list[nn.Module] = []
            if stride != (1, 1, 1):
                ops += _antialias_blur(stride, spec.antialias) + [spec.pool(irreps, stride)]
            for _ in range(n_conv):
                ops.append(spec.block(irreps, irreps_stage, spacing))
                irreps = irreps_stage
            stages.append(nn.Sequential(*ops))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class E3nnDecoder(nn.Module):
    """Per stage: ``pointwise equivariant linear (to the skip's irreps) -- TrilinearUpsample(stride) --
    concatenate skip -- SteerableBlock x n``, and a ``num_classes x 0e`` head (pointwise; ``spec.head``: the
    ``0e`` channels or every irrep's invariants) at every stage.

    The pointwise linear at the coarse resolution plays the role of nnU-Net's transposed convolution: it
    halves the features before upsampling, so the first convolution sees ``2 x`` the skip's irreps, as in
    ``PlainConvUNet``. Heads are always built, so parameter names do not depend on deep supervision.
    """

    def __init__(self, encoder: E3nnEncoder, num_classes: int, n_conv_per_stage: list[int], deep_supervision: bool,
                 spec: E3nnSpec):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        reduce, upsample, stages, seg_layers = [], [], [], []
        irreps_below = encoder.output_irreps[-1]
        for s in range(1, len(encoder.output_irreps)):
            irreps_skip = encoder.output_irreps[-(s + 1)]
            spacing = encoder.stage_spacing[-(s + 1)]
            reduce.append(spec.conv(irreps_below, irreps_skip, spacing, kernel_size=1))
            up, blur = TrilinearUpsample(encoder.strides[-s]), _antialias_blur(encoder.strides[-s], spec.upsample_antialias)
            upsample.append(nn.Sequential(up, *blur) if blur else up)
            irreps = irreps_skip + irreps_skip
            blocks = []
            for _ in range(n_conv_per_stage[s - 1]):
                blocks.append(spec.block(irreps, irreps_skip, spacing))
                irreps = irreps_skip
            stages.append(nn.Sequential(*blocks))
            seg_layers.append(spec.seg_head(irreps_skip, num_classes, spacing))
            irreps_below = irreps_skip
        self.reduce = nn.ModuleList(reduce)
        self.upsample = nn.ModuleList(upsample)
        self.stages = nn.ModuleList(stages)
        self.seg_layers = nn.ModuleList(seg_layers)

    def compute_conv_feature_map_size(self, stage_sizes: Sequence[Sequence[int]]) -> int:
        """Activation values per sample (``E3nnUNet.compute_conv_feature_map_size``'s count) of the decoder,
        given the encoder stages' spatial sizes (finest first): every reduction, upsampling (and blur),
        block's convolution, norm and gate output, and head."""
        total = 0
        for s in range(len(self.stages)):
            below, size = int(np.prod(stage_sizes[-(s + 1)])), int(np.prod(stage_sizes[-(s + 2)]))
            up = self.upsample[s]
            upsampled = 1 + (_blur_passes(up[1]) if isinstance(up, nn.Sequential) else 0)  # + the anti-aliasing blur
            total += self.reduce[s].irreps_out.dim * (below + upsampled * size)
            for block in self.stages[s]:
                total += (2 * block.conv.irreps_out.dim + block.irreps_out.dim) * size
            if self.deep_supervision or s == len(self.stages) - 1:
                head = self.seg_layers[s]
                total += (self.num_classes + (head.n_invariants if isinstance(head, InvariantHead) else 0)) * size
        return total

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1]
        seg_outputs = []
        for s in range(len(self.stages)):
            x = self.upsample[s](self.reduce[s](x))
            x = self.stages[s](torch.cat((x, skips[-(s + 2)]), dim=1))
            if self.deep_supervision or s == len(self.stages) - 1:
                seg_outputs.append(self.seg_layers[s](x))
        seg_outputs = seg_outputs[::-1]  # highest resolution first, like nnU-Net
        return seg_outputs if self.deep_supervision else seg_outputs[0]


class SpecStateDict:
    """Network mixin: ``load_state_dict`` whose error, for weights that do not fit, names the network's
    ``E3nnSpec`` and the likely cause (weights of another recipe, such as the paper's network that
    ``nnUNetTrainerE3nn`` built before version 0.2). Needs ``self.spec``."""

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except RuntimeError as error:
            raise RuntimeError(
                f"{error}\n\nThese weights do not fit {type(self).__name__} of {self.spec.describe()}: they were "
                f"trained with another E3nnSpec. Models trained under nnUNetTrainerE3nn before version 0.2 hold "
                f"the paper's network: set their checkpoints' trainer_name to nnUNetTrainerE3nnShells "
                f"(docs/steerable.md)") from error


class E3nnUNet(SpecStateDict, AbstractDynamicNetworkArchitectures):
    """SO(3)- or O(3)-equivariant U-Net (Diaz et al.) with nnU-Net's network protocol.

    Topology as ``PlainConvUNet``: ``n_stages`` stages, ``strides`` per stage (pooling before the stage's
    convolutions; anisotropic strides such as ``[1, 2, 2]`` allowed), ``n_conv_per_stage`` and
    ``n_conv_per_stage_decoder`` blocks. Every operation is equivariant:

    - encoder stage: ``NormMaxPool3d(stride)`` (``spec.pooling="mean"``: ``MeanPool3d``; never a strided
      convolution) then ``SteerableBlock``\\ s
      (``-- SteerableConv3d -- EquivariantInstanceNorm -- EquivariantGate --``);
    - decoder stage: pointwise equivariant linear, ``TrilinearUpsample(stride)``, concatenation with the skip,
      ``SteerableBlock``\\ s, and a pointwise head to ``num_classes x 0e`` (``spec.head``).

    ``spec`` (an ``E3nnSpec`` or the dict of its fields; ``None``: ``E3nnSpec()``, the paper's network) decides everything
    steerable: group, irreps ratio, kernel size and basis, gate activation, pooling, anti-aliasing (a
    ``GaussianBlur3d`` of ``antialias * stride`` voxels before every pooling / ``upsample_antialias *
    stride`` after every upsampling) and width scale. ``features_per_stage``: per stage either a width
    (int; scaled by ``spec.width_scale`` and mapped to ``spec.ratio``, see ``E3nnSpec.stage_irreps``) or an
    irreps string. ``spacing`` is the voxel size of the input in mm; stage ``s`` works at ``spacing *
    prod(strides[:s + 1])`` and its kernels are balls of diameter ``spec.kernel_size`` voxels along the
    finest axis of that stage. Input: ``input_channels x 0e``. Output: ``(batch, num_classes, x, y, z)``
    logits, or with ``deep_supervision`` a list of them at every decoder resolution, highest first. All
    arguments are JSON-able, so the class can stand in a plans file.

    Equivariance is exact for the grid symmetries that preserve the stage spacings and strides when every
    spatial size is divisible by the product of the strides (checked in ``forward``).
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        n_stages: int,
        features_per_stage: int | str | Sequence[int | str],
        strides: int | Sequence[int | Sequence[int]],
        n_conv_per_stage: int | Sequence[int],
        n_conv_per_stage_decoder: int | Sequence[int],
        deep_supervision: bool = False,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        patch_size: Sequence[int] | None = None,
        spec: E3nnSpec | Mapping | None = None,
    ):
        super().__init__()
        spec = E3nnSpec.coerce(spec)
        strides, spacing, stage_spacing, self.total_stride = _topology("E3nnUNet", n_stages, strides, spacing)
        if patch_size is not None:
            self.check_input_size(patch_size, "patch size")
        stage_irreps = [spec.stage_irreps(f) for f in _per_stage(features_per_stage, n_stages, "features_per_stage")]
        n_conv_per_stage = _per_stage(n_conv_per_stage, n_stages, "n_conv_per_stage")
        n_conv_per_stage_decoder = _per_stage(n_conv_per_stage_decoder, n_stages - 1, "n_conv_per_stage_decoder")
        if min(n_conv_per_stage + n_conv_per_stage_decoder) < 1:
            raise ValueError(f"every stage needs at least one convolution, got n_conv_per_stage={n_conv_per_stage}, "
                             f"n_conv_per_stage_decoder={n_conv_per_stage_decoder}")
        self.spec = spec
        self.symmetry, self.num_classes, self.input_channels = spec.symmetry, num_classes, input_channels
        self.encoder = E3nnEncoder(o3.Irreps(f"{input_channels}x0e"), stage_irreps, strides, stage_spacing,
                                   n_conv_per_stage, spec)
        self.decoder = E3nnDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision, spec)
        # where the encoder, the stem and the input-dependent weights are (dynamic-network-architectures' keys)
        self.key_to_encoder = "encoder.stages"
        self.key_to_stem = "encoder.stages.0"
        first_block = len(self.encoder.stages[0]) - n_conv_per_stage[0]  # 1 when stage 0 pools first
        self.keys_to_in_proj = (f"encoder.stages.0.{first_block}.conv",)
        skip_constant_buffers_in_ddp(self)

    def check_input_size(self, size: Sequence[int], what: str = "input size") -> None:
        """``ValueError`` unless ``size`` (x, y, z) is divisible by the product of the strides."""
        size = tuple(int(s) for s in size)
        if len(size) != 3 or any(n % s for n, s in zip(size, self.total_stride)):
            raise ValueError(f"{what} {list(size)} is not divisible by the product of the strides "
                             f"{list(self.total_stride)}: pooling would drop voxels and break equivariance")

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """``(batch, input_channels, x, y, z)`` -> logits ``(batch, num_classes, x, y, z)`` (or a list)."""
        self.check_input_size(x.shape[2:])
        return self.decoder(self.encoder(x))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Activation values per sample that a training step handles, as nnU-Net's planners count them: every
        block's convolution, norm and gate outputs, every pooling, reduction, upsampling and head output. An
        index of size, not an exact count of what is kept: the fused norm + gate node (the eager default)
        keeps only the convolution output; ``planning/memory.py`` fits bytes per value to measured peaks.
        """
        size = np.array(input_size, dtype=np.int64)
        total = 0
        sizes = []
        for stage, stride in zip(self.encoder.stages, self.encoder.strides):
            size = size // np.array(stride)
            sizes.append(size)
            for op, following in zip(stage, list(stage)[1:] + [None]):
                if isinstance(op, GaussianBlur3d):  # before the pooling, at the finer size
                    total += _blur_passes(op) * following.irreps.dim * int(np.prod(size * np.array(stride)))
                elif isinstance(op, (NormMaxPool3d, MeanPool3d)):  # the pooled output (the mean keeps no indices)
                    total += op.irreps.dim * int(np.prod(size))
                else:
                    total += (2 * op.conv.irreps_out.dim + op.irreps_out.dim) * int(np.prod(size))
        return int(total + self.decoder.compute_conv_feature_map_size(sizes))

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net applies this to every submodule: steerable convolutions keep their own initialisation
        (unit output second moment, any random weights keep equivariance)."""
        if isinstance(module, (SteerableConv3d, InvariantHead)):
            module.reset_parameters()


def e3nn_unet_kwargs(configuration_manager, trainer_name: str = "E3nnUNet") -> dict:
    """``E3nnUNet`` topology arguments read from an nnU-Net configuration (``PlainConvUNet``-style plans), or
    for nnU-Net's ``ResidualEncoderUNet`` plans (ResEnc M/L/XL) ``E3nnResEncUNet``'s (``e3nn_resenc_unet_kwargs``).

    Uses the stages, strides, convolutions per stage, feature widths, voxel spacing and patch size;
    the plans' kernel sizes are not used (steerable kernels are sized in mm by the spec's
    ``kernel_size``). Raises ``ValueError`` for 2D configurations and plans without these entries.
    """
    if configuration_manager.network_arch_class_name == RESENC_UNET:
        from .e3nn_resenc_unet import e3nn_resenc_unet_kwargs
        return e3nn_resenc_unet_kwargs(configuration_manager, trainer_name)
    patch_size = list(configuration_manager.patch_size)
    if len(patch_size) != 3:
        raise ValueError(f"{trainer_name} is a 3D trainer: this configuration is {len(patch_size)}D "
                         f"(patch size {patch_size}); use a 3D configuration such as 3d_fullres")
    arch = configuration_manager.network_arch_init_kwargs
    missing = [k for k in ("n_stages", "features_per_stage", "strides", "n_conv_per_stage",
                           "n_conv_per_stage_decoder") if k not in arch]
    if missing:
        raise ValueError(f"{trainer_name} needs PlainConvUNet-style plans (as nnU-Net's default nnUNetPlans); "
                         f"the configuration's architecture {configuration_manager.network_arch_class_name} "
                         f"lacks {missing}")
    return dict(
        n_stages=arch["n_stages"],
        features_per_stage=list(arch["features_per_stage"]),
        strides=[list(s) for s in arch["strides"]],
        n_conv_per_stage=list(arch["n_conv_per_stage"]),
        n_conv_per_stage_decoder=list(arch["n_conv_per_stage_decoder"]),
        spacing=list(configuration_manager.spacing),
        patch_size=patch_size,
    )


def e3nn_unet_from_plans(configuration_manager, spec: E3nnSpec, num_input_channels: int, num_output_channels: int,
                         deep_supervision: bool = True, trainer_name: str = "E3nnUNet") -> E3nnUNet:
    """The ``E3nnUNet`` of ``spec`` on a plans configuration (nnU-Net's ``ConfigurationManager``), initialised.

    The topology comes from the plans (:func:`e3nn_unet_kwargs`), everything steerable from ``spec``. Plans
    for nnU-Net's ``ResidualEncoderUNet`` (``nnUNetResEncUNet{M,L,XL}Plans``) give the ``E3nnResEncUNet`` of
    ``spec`` instead (``e3nn_resenc_unet_from_plans``).
    Built by nnU-Net's ``get_network_from_plans``, as the stock trainers build theirs, with the spec as the
    JSON-able dict a plans file would hold. ``trainer_name`` only names the caller in error messages.
    """
    if not isinstance(spec, E3nnSpec):
        raise ValueError(f"{trainer_name}: spec must be an E3nnSpec, got {type(spec).__name__}")
    if configuration_manager.network_arch_class_name == RESENC_UNET:  # nnU-Net's ResEnc M/L/XL presets
        from .e3nn_resenc_unet import e3nn_resenc_unet_from_plans
        return e3nn_resenc_unet_from_plans(configuration_manager, spec, num_input_channels, num_output_channels,
                                           deep_supervision, trainer_name)
    kwargs = dict(e3nn_unet_kwargs(configuration_manager, trainer_name), spec=spec.to_dict())
    return get_network_from_plans(f"{E3nnUNet.__module__}.{E3nnUNet.__qualname__}", kwargs, (),
                                  num_input_channels, num_output_channels, allow_init=True,
                                  deep_supervision=deep_supervision)
