"""E3nnResEncUNet: the steerable sibling of nnU-Net's ``ResidualEncoderUNet`` (its ResEnc M/L/XL presets),
following nnU-Net's network protocol; ``e3nn_resenc_unet_kwargs`` reads its topology from such plans and
``e3nn_resenc_unet_from_plans`` builds it."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from e3nn import o3
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from ..layers import GaussianBlur3d, InvariantHead, SteerableConv3d, SteerableResidualBlock
from .ddp import skip_constant_buffers_in_ddp
from .e3nn_spec import E3nnSpec
from .e3nn_unet import E3nnDecoder, SpecStateDict, _antialias_blur, _blur_passes, _per_stage, _topology

__all__ = ["E3nnResEncUNet", "e3nn_resenc_unet_from_plans", "e3nn_resenc_unet_kwargs"]


def _residual_block(spec: E3nnSpec, irreps_in, irreps_out, spacing, stride) -> SteerableResidualBlock:
    return SteerableResidualBlock(irreps_in, irreps_out, kernel_size=spec.kernel_size, spacing=spacing,
                                  parity=spec.parity, num_radial_basis=spec.num_radial_basis, lmax=spec.lmax,
                                  scalar_activation=spec.scalar_activation, radial_basis=spec.radial_basis,
                                  stride=stride, pooling=spec.pooling)


class E3nnResEncEncoder(nn.Module):
    """``stem: SteerableBlock`` at the input resolution, then per stage ``[GaussianBlur3d] --
    SteerableResidualBlock(stride) -- SteerableResidualBlock x (n - 1)``; returns every stage's output.
    The first block of a stage pools (``spec.pooling``'s ``NormMaxPool3d`` or ``MeanPool3d``) before both its
    paths; the blur (``antialias * stride`` voxels) is there only with ``spec.antialias > 0``."""

    def __init__(self, input_irreps: o3.Irreps, stage_irreps: list[o3.Irreps], strides: list[tuple[int, int, int]],
                 spacing: tuple[float, float, float], stage_spacing: list[tuple[float, float, float]],
                 n_blocks_per_stage: list[int], spec: E3nnSpec):
        super().__init__()
        self.strides, self.stage_spacing, self.output_irreps = strides, stage_spacing, stage_irreps
        self.stem = spec.block(input_irreps, stage_irreps[0], spacing)
        stages = []
        irreps = stage_irreps[0]
        for irreps_stage, stride, stage_spacing_s, n_blocks in zip(stage_irreps, strides, stage_spacing,
                                                                   n_blocks_per_stage):
            ops: list[nn.Module] = _antialias_blur(stride, spec.antialias)
            for b in range(n_blocks):
                ops.append(_residual_block(spec, irreps, irreps_stage, stage_spacing_s, stride if b == 0 else 1))
                irreps = irreps_stage
            stages.append(nn.Sequential(*ops))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class E3nnResEncUNet(SpecStateDict, AbstractDynamicNetworkArchitectures):
    """SO(3)- or O(3)-equivariant residual-encoder U-Net with the topology of nnU-Net's ``ResidualEncoderUNet``.

    ``-- stem -- stage 0 -- ... -- stage n-1 (bottleneck) -- decoder --``:

    - stem: one ``SteerableBlock`` (conv -- norm -- gate) from ``input_channels x 0e`` to stage 0's irreps, at
      the input resolution (``ResidualEncoder``'s stem);
    - encoder stage ``s``: ``n_blocks_per_stage[s]`` ``SteerableResidualBlock``\\ s (``BasicBlockD``'s layout,
      gate after the sum); the first pools with ``NormMaxPool3d(strides[s])`` before both its paths (never a
      strided convolution) and projects its skip when the irreps change;
    - decoder: ``E3nnUNet``'s (pointwise linear, ``TrilinearUpsample``, concatenation,
      ``n_conv_per_stage_decoder`` ``SteerableBlock``\\ s, a ``num_classes x 0e`` head per stage; heads are
      always built, so parameter names do not depend on ``deep_supervision``).

    ``features_per_stage``: widths (ints, turned into irreps by ``spec.stage_irreps``) or irreps strings.
    ``spacing``: input voxel size in mm; stage ``s`` works at ``spacing * prod(strides[:s + 1])``. ``spec``:
    an ``E3nnSpec`` (or its dict, so the kwargs stay JSON-able) with the group, irreps ratio, kernel and
    nonlinearity. Output: ``(batch, num_classes, x, y, z)`` logits, or a list (highest resolution first).

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
        n_blocks_per_stage: int | Sequence[int],
        n_conv_per_stage_decoder: int | Sequence[int],
        deep_supervision: bool = False,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        patch_size: Sequence[int] | None = None,
        spec: E3nnSpec | dict | None = None,
    ):
        super().__init__()
        spec = E3nnSpec.coerce(spec)
        strides, spacing, stage_spacing, self.total_stride = _topology("E3nnResEncUNet", n_stages, strides, spacing)
        if patch_size is not None:
            self.check_input_size(patch_size, "patch size")
        stage_irreps = [spec.stage_irreps(f) for f in _per_stage(features_per_stage, n_stages, "features_per_stage")]
        n_blocks_per_stage = _per_stage(n_blocks_per_stage, n_stages, "n_blocks_per_stage")
        n_conv_per_stage_decoder = _per_stage(n_conv_per_stage_decoder, n_stages - 1, "n_conv_per_stage_decoder")
        if min(n_blocks_per_stage + n_conv_per_stage_decoder) < 1:
            raise ValueError(f"every stage needs at least one block, got n_blocks_per_stage={n_blocks_per_stage}, "
                             f"n_conv_per_stage_decoder={n_conv_per_stage_decoder}")

        self.spec, self.symmetry = spec, spec.symmetry
        self.num_classes, self.input_channels = num_classes, input_channels
        self.encoder = E3nnResEncEncoder(o3.Irreps(f"{input_channels}x0e"), stage_irreps, strides, spacing,
                                         stage_spacing, n_blocks_per_stage, spec)
        self.decoder = E3nnDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision, spec)
        # dynamic-network-architectures' keys, as ResidualEncoderUNet's
        self.key_to_encoder = "encoder.stages"
        self.key_to_stem = "encoder.stem"
        self.keys_to_in_proj = ("encoder.stem.conv",)
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
        """Activation values per sample a training step handles, counted as ``E3nnUNet`` counts them: the
        stem's conv, norm and gate outputs, every residual block (``SteerableResidualBlock.
        compute_conv_feature_map_size``), every blur, and the decoder's reductions, upsamplings, blocks and
        heads."""
        size = np.array(input_size, dtype=np.int64)
        stem = self.encoder.stem
        total = (2 * stem.conv.irreps_out.dim + stem.irreps_out.dim) * int(np.prod(size))
        sizes = []
        for stage, stride in zip(self.encoder.stages, self.encoder.strides):
            for op in stage:
                if isinstance(op, GaussianBlur3d):  # before the pooling, at the finer size
                    total += _blur_passes(op) * stage[1].irreps_in.dim * int(np.prod(size))
                else:
                    total += op.compute_conv_feature_map_size(size)
                    size = size // np.array(op.stride)
            sizes.append(size)
        return int(total + self.decoder.compute_conv_feature_map_size(sizes))

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net applies this to every submodule: steerable convolutions keep their own initialisation, and
        every residual block's second norm starts at zero (``ResidualEncoderUNet``'s
        ``init_last_bn_before_add_to_0``), so each block starts as its gated skip path."""
        if isinstance(module, (SteerableConv3d, InvariantHead)):
            module.reset_parameters()
        elif isinstance(module, SteerableResidualBlock):
            module.zero_init_last_norm()


def e3nn_resenc_unet_kwargs(configuration_manager, trainer_name: str = "E3nnResEncUNet") -> dict:
    """``E3nnResEncUNet`` topology arguments read from an nnU-Net configuration for ``ResidualEncoderUNet``
    (nnU-Net's ``nnUNetResEncUNet{M,L,XL}Plans``): stages, strides, blocks per stage, decoder convolutions,
    feature widths, voxel spacing and patch size. The plans' kernel sizes are not used (steerable kernels
    are sized in mm by the spec's ``kernel_size``). Raises ``ValueError`` for 2D configurations and plans
    without these entries."""
    patch_size = list(configuration_manager.patch_size)
    if len(patch_size) != 3:
        raise ValueError(f"{trainer_name} is a 3D trainer: this configuration is {len(patch_size)}D "
                         f"(patch size {patch_size}); use a 3D configuration such as 3d_fullres")
    arch = configuration_manager.network_arch_init_kwargs
    missing = [k for k in ("n_stages", "features_per_stage", "strides", "n_blocks_per_stage",
                           "n_conv_per_stage_decoder") if k not in arch]
    if missing:
        raise ValueError(f"{trainer_name}: the configuration's architecture "
                         f"{configuration_manager.network_arch_class_name} lacks {missing}")
    if arch.get("bottleneck_channels") or "Bottleneck" in str(arch.get("block", "")):
        raise ValueError(f"{trainer_name} builds BasicBlockD-style residual blocks; the plans ask for "
                         f"block={arch.get('block')!r}, bottleneck_channels={arch.get('bottleneck_channels')!r}")
    return dict(
        n_stages=arch["n_stages"],
        features_per_stage=list(np.broadcast_to(arch["features_per_stage"], arch["n_stages"]).tolist()),
        strides=[list(s) for s in arch["strides"]],
        n_blocks_per_stage=list(np.broadcast_to(arch["n_blocks_per_stage"], arch["n_stages"]).tolist()),
        n_conv_per_stage_decoder=list(np.broadcast_to(arch["n_conv_per_stage_decoder"], arch["n_stages"] - 1).tolist()),
        spacing=list(configuration_manager.spacing),
        patch_size=patch_size,
    )


def e3nn_resenc_unet_from_plans(configuration_manager, spec: E3nnSpec | dict | None, num_input_channels: int,
                                num_output_channels: int, deep_supervision: bool = True,
                                trainer_name: str = "E3nnResEncUNet") -> E3nnResEncUNet:
    """The ``E3nnResEncUNet`` of a ``ResidualEncoderUNet`` plans configuration (nnU-Net's
    ``ConfigurationManager``), initialised: the topology from the plans (:func:`e3nn_resenc_unet_kwargs`),
    everything else from ``spec``. Built by nnU-Net's ``get_network_from_plans``, as the stock trainers
    build theirs; ``trainer_name`` only names the caller in error messages."""
    spec = E3nnSpec.coerce(spec)
    kwargs = dict(e3nn_resenc_unet_kwargs(configuration_manager, trainer_name), spec=spec.to_dict())
    return get_network_from_plans(f"{E3nnResEncUNet.__module__}.{E3nnResEncUNet.__qualname__}", kwargs, (),
                                  num_input_channels, num_output_channels, allow_init=True,
                                  deep_supervision=deep_supervision)
