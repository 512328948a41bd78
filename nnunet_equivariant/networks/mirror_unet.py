"""MirrorUNet and MirrorResEncUNet: nnU-Net's plain and residual-encoder U-Nets with every operation
mirror-symmetric along chosen axes, and ``mirror_unet_from_plans``, the one for any 3D plans nnU-Net writes.

Built from dynamic_network_architectures' own blocks (``PlainConvEncoder`` / ``ResidualEncoder``,
``UNetDecoder``), so they have the topology of the plans (stages, per-stage kernel sizes and strides,
anisotropic ones such as ``[1, 2, 2]`` too, convs or residual blocks per stage, widths) and follow nnU-Net's
network protocol. Three changes make the whole network commute with flips along the symmetric axes::

    MirrorUNet encoder stage:       -- Pool(stride) -- [SymConv k -- Norm -- LeakyReLU] x n --
    MirrorResEncUNet stem:          -- SymConv k -- Norm -- LeakyReLU --
    MirrorResEncUNet encoder stage: -- Pool(stride) -- BasicBlockD(stride 1, SymConv k) x n --
    decoder stage:  -- SymConvTranspose(stride) -- cat(skip) -- [SymConv k -- Norm -- LeakyReLU] x n -- [Conv1 seg]

A ``BasicBlockD`` is ``x -> LeakyReLU(Norm(SymConv(LeakyReLU(Norm(SymConv(x))))) + skip(x))`` with
``skip`` the identity, or ``Norm(Conv1x1(x))`` when the width changes (a 1x1x1 kernel is its own mirror
image). nnU-Net's block strides its first convolution and average-pools its skip; here the stage pools
once before its first block, so both paths see the same centred windows.

1. Every convolution is a :class:`~nnunet_equivariant.layers.MirrorSymmetricConv3d`.
2. Downsampling is a pooling window followed by the stage's first convolution (or block) at stride 1.
   nnU-Net's stride-2 convolution with an odd kernel would place its windows off-centre on the even
   lengths the planner chooses and break the symmetry; pooling + convolution costs the same arithmetic.
3. Upsampling is a transposed convolution with kernel = stride and a symmetric kernel (for ``f123``:
   nearest-neighbour upsampling and a 1x1x1 convolution).

Instance norm, LeakyReLU, dropout and concatenation commute with flips. The input's spatial shape must
be divisible by the product of the strides along every axis (nnU-Net's patch sizes always are), else
``forward`` raises ``ValueError``.

Convention: axes as in :mod:`nnunet_equivariant.layers.mirror_conv` (``f1`` = tensor dim 2 = nnU-Net data
axis 0).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.residual import BasicBlockD
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He, init_last_bn_before_add_to_0
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import Tensor, nn

from nnunet_equivariant.layers.mirror_conv import (
    MirrorSymmetricConv3d,
    MirrorSymmetricConvTranspose3d,
    mirror_conv_op,
    symmetry_axes,
)
from nnunet_equivariant.networks.ddp import skip_constant_buffers_in_ddp
from nnunet_equivariant.networks.parameter_matching import count_parameters, match_widths

__all__ = ["MirrorUNet", "MirrorResEncUNet", "mirror_unet_from_plans"]

_PLAIN_CONV_UNET = f"{PlainConvUNet.__module__}.{PlainConvUNet.__name__}"
_RESENC_UNET = f"{ResidualEncoderUNet.__module__}.{ResidualEncoderUNet.__name__}"


class _MirrorNetwork(AbstractDynamicNetworkArchitectures):
    """What both mirror U-Nets share: argument checks, symmetric upsampling, the input-size check, the
    initialisation. A subclass builds ``self.encoder`` (pooling before stride-1 convolutions) and
    ``self.decoder`` (a ``UNetDecoder``), then calls ``_make_symmetric``."""

    def _check_arguments(self, conv_op, pool: str, symmetry: str | None) -> None:
        if not (isinstance(conv_op, type) and issubclass(conv_op, nn.Conv3d)):
            raise ValueError(f"{type(self).__name__} is 3D only: conv_op must be nn.Conv3d, got {conv_op!r}")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        self.symmetry = symmetry
        self.mirror_axes = symmetry_axes(symmetry)

    def _make_symmetric(self) -> None:
        """The decoder builds plain transposed convolutions: replace them by symmetric ones."""
        for i, up in enumerate(self.decoder.transpconvs):
            self.decoder.transpconvs[i] = MirrorSymmetricConvTranspose3d(
                up.in_channels, up.out_channels, up.kernel_size, up.stride, bias=up.bias is not None,
                symmetry=self.symmetry, device=up.weight.device, dtype=up.weight.dtype,
            )
        self.input_divisor = tuple(int(np.prod(s)) for s in zip(*self.encoder.strides))
        skip_constant_buffers_in_ddp(self)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if any(n % d for n, d in zip(x.shape[2:], self.input_divisor)):
            raise ValueError(f"{type(self).__name__} input {tuple(x.shape)}: spatial shape must be divisible by "
                             f"the product of the strides {self.input_divisor} along every axis")
        return self.decoder(self.encoder(x))

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net's He initialisation (``InitWeights_He(1e-2)``), with the fan of the full symmetric
        kernel for the mirror-symmetric layers (``InitWeights_He`` would use the smaller free weight's)."""
        if isinstance(module, (MirrorSymmetricConv3d, MirrorSymmetricConvTranspose3d)):
            module.kaiming_normal_(a=1e-2)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        else:
            InitWeights_He(1e-2)(module)


def _per_stage_counts(counts, n: int, name: str) -> list[int]:
    counts = [counts] * n if isinstance(counts, int) else list(counts)
    if len(counts) != n:
        raise ValueError(f"{name} needs {n} entries, got {counts}")
    return counts


class MirrorUNet(_MirrorNetwork):
    """``PlainConvUNet``'s arguments plus ``symmetry`` (``None``, ``"f1"`` ... ``"f123"``) and ``pool``
    (``"max"`` or ``"avg"``, the downsampling window). ``conv_op`` must be ``nn.Conv3d`` (3D only).

    ``forward``: ``(batch, input_channels, x, y, z)`` -> logits ``(batch, num_classes, x, y, z)``, or with
    ``deep_supervision`` a list at full, 1/stride_1, 1/(stride_1 stride_2), ... resolution (largest first).
    """

    def __init__(
        self,
        input_channels: int,
        n_stages: int,
        features_per_stage: int | Sequence[int],
        conv_op: type[nn.Module],
        kernel_sizes: int | Sequence,
        strides: int | Sequence,
        n_conv_per_stage: int | Sequence[int],
        num_classes: int,
        n_conv_per_stage_decoder: int | Sequence[int],
        conv_bias: bool = False,
        norm_op: type[nn.Module] | None = None,
        norm_op_kwargs: dict | None = None,
        dropout_op: type[nn.Module] | None = None,
        dropout_op_kwargs: dict | None = None,
        nonlin: type[nn.Module] | None = None,
        nonlin_kwargs: dict | None = None,
        deep_supervision: bool = False,
        nonlin_first: bool = False,
        symmetry: str | None = "f123",
        pool: str = "max",
    ):
        super().__init__()
        self._check_arguments(conv_op, pool, symmetry)
        self.key_to_encoder = "encoder.stages"
        self.key_to_stem = "encoder.stages.0"
        self.keys_to_in_proj = ("encoder.stages.0.0.convs.0.all_modules.0", "encoder.stages.0.0.convs.0.conv")
        n_conv_per_stage = _per_stage_counts(n_conv_per_stage, n_stages, "n_conv_per_stage")
        n_conv_per_stage_decoder = _per_stage_counts(n_conv_per_stage_decoder, n_stages - 1,
                                                     "n_conv_per_stage_decoder")
        self.encoder = PlainConvEncoder(
            input_channels, n_stages, features_per_stage, mirror_conv_op(symmetry), kernel_sizes, strides,
            n_conv_per_stage, conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin,
            nonlin_kwargs, return_skips=True, nonlin_first=nonlin_first, pool=pool,
        )
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision,
                                   nonlin_first=nonlin_first)
        self._make_symmetric()

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Voxels x channels of the feature maps kept for the backward pass (nnU-Net's memory estimate):
        the convolutions of each stage at its pooled size, the pooled maps, and the decoder's maps."""
        if len(input_size) != 3:
            raise ValueError(f"give the spatial size (x, y, z) only, got {tuple(input_size)}")
        output = np.int64(0)
        size = list(input_size)
        channels = self.encoder.stages[0][-1].convs[0].input_channels
        for stage, stride in zip(self.encoder.stages, self.encoder.strides):
            size = [i // j for i, j in zip(size, stride)]
            if len(stage) > 1:  # a pooling window precedes the convolutions
                output += np.prod([channels, *size], dtype=np.int64)
            output += stage[-1].compute_conv_feature_map_size(size)
            channels = stage[-1].output_channels
        return output + self.decoder.compute_conv_feature_map_size(input_size)


class MirrorResEncUNet(_MirrorNetwork):
    """``ResidualEncoderUNet``'s arguments (nnU-Net's ResEnc M/L/XL plans: a stem, ``n_blocks_per_stage``
    ``BasicBlockD`` residual blocks, a plain decoder) plus ``symmetry`` and ``pool`` as in ``MirrorUNet``.
    Only ``BasicBlockD`` (what nnU-Net's planners write); ``conv_op`` must be ``nn.Conv3d``.

    Every stage pools (``pool``, window = stride) before its first block, and every block runs at stride 1:
    the skip path then needs no pooling of its own, and a width change is a 1x1x1 projection, symmetric
    by itself. The blocks' second norm starts at zero (nnU-Net's ``init_last_bn_before_add_to_0``), so
    each block starts as its skip path. ``forward`` as ``MirrorUNet``'s.
    """

    def __init__(
        self,
        input_channels: int,
        n_stages: int,
        features_per_stage: int | Sequence[int],
        conv_op: type[nn.Module],
        kernel_sizes: int | Sequence,
        strides: int | Sequence,
        n_blocks_per_stage: int | Sequence[int],
        num_classes: int,
        n_conv_per_stage_decoder: int | Sequence[int],
        conv_bias: bool = False,
        norm_op: type[nn.Module] | None = None,
        norm_op_kwargs: dict | None = None,
        dropout_op: type[nn.Module] | None = None,
        dropout_op_kwargs: dict | None = None,
        nonlin: type[nn.Module] | None = None,
        nonlin_kwargs: dict | None = None,
        deep_supervision: bool = False,
        block: type[nn.Module] | str = BasicBlockD,
        bottleneck_channels: int | Sequence[int] | None = None,
        stem_channels: int | None = None,
        symmetry: str | None = "f123",
        pool: str = "max",
    ):
        super().__init__()
        self._check_arguments(conv_op, pool, symmetry)
        if block not in (BasicBlockD, f"{BasicBlockD.__module__}.{BasicBlockD.__name__}") or bottleneck_channels:
            raise ValueError(f"MirrorResEncUNet builds BasicBlockD residual blocks (nnU-Net's ResEnc plans), got "
                             f"block={block!r}, bottleneck_channels={bottleneck_channels!r}")
        self.key_to_encoder = "encoder.stages"
        self.key_to_stem = "encoder.stem"
        self.keys_to_in_proj = ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0")
        n_blocks_per_stage = _per_stage_counts(n_blocks_per_stage, n_stages, "n_blocks_per_stage")
        n_conv_per_stage_decoder = _per_stage_counts(n_conv_per_stage_decoder, n_stages - 1,
                                                     "n_conv_per_stage_decoder")
        self.encoder = ResidualEncoder(
            input_channels, n_stages, features_per_stage, mirror_conv_op(symmetry), kernel_sizes, strides,
            n_blocks_per_stage, conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin,
            nonlin_kwargs, BasicBlockD, None, return_skips=True, disable_default_stem=False,
            stem_channels=stem_channels, pool_type=pool,
        )
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision)
        self._make_symmetric()

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """As ``ResidualEncoderUNet`` counts it (stem, every block's two convolutions and projection, the
        decoder), plus each stage's pooled map (nnU-Net's strided first convolution has none)."""
        if len(input_size) != 3:
            raise ValueError(f"give the spatial size (x, y, z) only, got {tuple(input_size)}")
        output = np.int64(self.encoder.stem.compute_conv_feature_map_size(input_size))
        size = list(input_size)
        channels = self.encoder.stem.output_channels
        for (pooling, blocks), stride in zip(self.encoder.stages, self.encoder.strides):
            size = [i // j for i, j in zip(size, stride)]
            if any(s != 1 for s in stride):
                output += np.prod([channels, *size], dtype=np.int64)
            output += blocks.compute_conv_feature_map_size(size)
            channels = blocks.output_channels
        return output + self.decoder.compute_conv_feature_map_size(input_size)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """``_MirrorNetwork.initialize``, then every block's last norm at zero (as ``ResidualEncoderUNet``)."""
        _MirrorNetwork.initialize(module)
        init_last_bn_before_add_to_0(module)


# the stock network a plans file names -> its mirror-symmetric sibling
_MIRROR_OF = {
    _PLAIN_CONV_UNET: f"{MirrorUNet.__module__}.{MirrorUNet.__name__}",
    _RESENC_UNET: f"{MirrorResEncUNet.__module__}.{MirrorResEncUNet.__name__}",
}


def mirror_unet_from_plans(configuration_manager, num_input_channels: int, num_output_channels: int,
                           symmetry: str | None, deep_supervision: bool = True,
                           keep_parameters: bool = False) -> MirrorUNet | MirrorResEncUNet:
    """The mirror-symmetric U-Net of a plans configuration (nnU-Net's ``ConfigurationManager``), initialised.

    ``MirrorUNet`` for plans of nnU-Net's ``PlainConvUNet`` (``nnUNetPlans``), ``MirrorResEncUNet`` for
    plans of its ``ResidualEncoderUNet`` (``nnUNetResEncUNet{M,L,XL}Plans``): the plans' arguments plus
    ``symmetry``, built by nnU-Net's ``get_network_from_plans`` as the stock trainers build theirs.
    ``keep_parameters``: scale every stage's width (for ResEnc: every block's, the stem's with stage 0)
    by the one factor whose rounded widths bring the parameter count closest to the stock network of the
    same plans (about 0.1 % off for nnU-Net's default plans). Raises ``ValueError`` for plans of another
    network or not 3D.
    """
    name = configuration_manager.network_arch_class_name
    if name not in _MIRROR_OF:
        raise ValueError(f"the mirror-symmetric U-Nets follow plans for {sorted(_MIRROR_OF)}; this configuration "
                         f"uses {name}")
    kwargs = dict(configuration_manager.network_arch_init_kwargs)
    kwargs["features_per_stage"] = [int(f) for f in np.broadcast_to(kwargs["features_per_stage"], kwargs["n_stages"])]

    def build(network_class: str = _MIRROR_OF[name], allow_init: bool = False, **changes) -> nn.Module:
        return get_network_from_plans(network_class, {**kwargs, **changes},
                                      configuration_manager.network_arch_init_kwargs_req_import,
                                      num_input_channels, num_output_channels, allow_init=allow_init,
                                      deep_supervision=deep_supervision)

    if keep_parameters:
        target = count_parameters(lambda: build(name))
        kwargs["features_per_stage"] = list(match_widths(
            kwargs["features_per_stage"],
            lambda widths: count_parameters(lambda: build(symmetry=symmetry, features_per_stage=list(widths))),
            target, absorb_last=False,
        ))
    return build(symmetry=symmetry, allow_init=True)
