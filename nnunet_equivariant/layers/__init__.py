"""Equivariant layers for voxel fields of e3nn irreps, channels first: ``(batch, irreps.dim, x, y, z)``."""
from .gate import EquivariantGate
from .norm import EquivariantInstanceNorm
from .pool import NormMaxPool3d
from .steerable_conv import SteerableConv3d
from .upsample import TrilinearUpsample

__all__ = ["SteerableConv3d", "EquivariantGate", "EquivariantInstanceNorm", "NormMaxPool3d", "TrilinearUpsample"]
