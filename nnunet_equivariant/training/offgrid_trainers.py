"""Steerable trainers with the off-grid rotation augmentation (a lever of issue 17, not the default)."""
from __future__ import annotations

from .e3nn import nnUNetTrainerE3nn
from .offgrid_rotation import OffGridRotationMixin

__all__ = ["nnUNetTrainerE3nnOffgridDA"]


class nnUNetTrainerE3nnOffgridDA(OffGridRotationMixin, nnUNetTrainerE3nn):
    """``nnUNetTrainerE3nn`` trained with rotations within 45 deg about one axis, p = 0.5 per sample: the
    poses its grid symmetries do not already cover (see :mod:`~nnunet_equivariant.training.offgrid_rotation`)."""
