"""Equivariant layers.

Steerable (e3nn irreps fields, channels first ``(batch, irreps.dim, x, y, z)``): ``SteerableConv3d``,
``EquivariantGate``, ``EquivariantInstanceNorm``, ``NormMaxPool3d``, ``MeanPool3d`` (``make_pool`` builds
either by ``POOLINGS`` name), ``TrilinearUpsample``, ``GaussianBlur3d``
(anti-aliasing of pooling and upsampling), ``InvariantHead`` (logits from every irrep's invariants), the
blocks ``SteerableBlock`` (conv -- norm -- gate) and ``SteerableResidualBlock`` (``BasicBlockD``'s layout);
``parse_irreps`` checks an irreps argument.
Mirror-symmetric (plain channels): ``MirrorSymmetricConv3d``, ``MirrorSymmetricConvTranspose3d``.
"""
from ._irreps import parse_irreps
from .blur import GaussianBlur3d
from .gate import EquivariantGate
from .head import InvariantHead
from .mirror_conv import (
    SYMMETRIES,
    MirrorSymmetricConv3d,
    MirrorSymmetricConvTranspose3d,
    mirror_conv_op,
    symmetry_axes,
)
from .norm import EquivariantInstanceNorm
from .pool import POOLINGS, MeanPool3d, NormMaxPool3d, make_pool
from .steerable_block import SteerableBlock
from .steerable_conv import SteerableConv3d
from .steerable_residual import SteerableResidualBlock
from .upsample import TrilinearUpsample

__all__ = [
    "SteerableConv3d", "EquivariantGate", "EquivariantInstanceNorm", "NormMaxPool3d", "MeanPool3d", "POOLINGS",
    "make_pool",
    "TrilinearUpsample",
    "GaussianBlur3d", "InvariantHead", "SteerableBlock", "SteerableResidualBlock", "parse_irreps",
    "SYMMETRIES", "MirrorSymmetricConv3d", "MirrorSymmetricConvTranspose3d", "mirror_conv_op", "symmetry_axes",
]
