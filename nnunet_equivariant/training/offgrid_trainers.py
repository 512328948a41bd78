"""Steerable trainers with the levers of issue 17 against off-grid error (not the default): rotation
augmentation restricted to what the grid symmetries do not cover, and an unlabelled off-grid consistency
loss."""
from __future__ import annotations

from .consistency import OffgridConsistencyMixin
from .e3nn import nnUNetTrainerE3nn
from .offgrid_rotation import OffGridRotationMixin

__all__ = ["nnUNetTrainerE3nnOffgridDA", "nnUNetTrainerE3nnConsistency"]


class nnUNetTrainerE3nnOffgridDA(OffGridRotationMixin, nnUNetTrainerE3nn):
    """``nnUNetTrainerE3nn`` trained with rotations within 45 deg about one axis, p = 0.5 per sample: the
    poses its grid symmetries do not already cover (see :mod:`~nnunet_equivariant.training.offgrid_rotation`)."""


class nnUNetTrainerE3nnConsistency(OffgridConsistencyMixin, nnUNetTrainerE3nn):
    """``nnUNetTrainerE3nn`` with the off-grid consistency term (weight 1, one rotated copy per batch within
    45 deg about one axis; see :mod:`~nnunet_equivariant.training.consistency`): about 1.5x a step at batch 2."""
