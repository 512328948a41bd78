"""Equivariant layers: mirror-symmetric convolutions (and the steerable layers of the e3nn networks)."""
from nnunet_equivariant.layers.mirror_conv import (
    SYMMETRIES,
    MirrorSymmetricConv3d,
    MirrorSymmetricConvTranspose3d,
    mirror_conv_op,
    symmetry_axes,
)

__all__ = ["SYMMETRIES", "MirrorSymmetricConv3d", "MirrorSymmetricConvTranspose3d", "mirror_conv_op", "symmetry_axes"]
