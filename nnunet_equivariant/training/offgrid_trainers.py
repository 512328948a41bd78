"""Steerable trainers with the levers of issue 17 against off-grid error, on the paper's network
(``nnUNetTrainerE3nnShells``): rotation augmentation restricted to what the grid symmetries do not cover and
an unlabelled off-grid consistency loss; and ``nnUNetTrainerE3nnCompact``, the name under which the default
recipe was measured."""
from __future__ import annotations

from .consistency import OffgridConsistencyMixin
from .e3nn import nnUNetTrainerE3nn, nnUNetTrainerE3nnShells

__all__ = ["nnUNetTrainerE3nnOffgridDA", "nnUNetTrainerE3nnConsistency", "nnUNetTrainerE3nnCompact"]


class nnUNetTrainerE3nnOffgridDA(nnUNetTrainerE3nnShells):
    """The paper's network trained with rotations within 45 deg about one axis, p = 0.5 per sample: the
    poses its grid symmetries do not already cover (see :mod:`~nnunet_equivariant.training.offgrid_rotation`;
    the default ``nnUNetTrainerE3nn`` trains with them)."""

    rotation_range_deg = 45


class nnUNetTrainerE3nnConsistency(OffgridConsistencyMixin, nnUNetTrainerE3nnShells):
    """The paper's network with the off-grid consistency term (weight 1, one rotated copy per batch within
    45 deg about one axis; see :mod:`~nnunet_equivariant.training.consistency`): about 1.5x a step at batch 2."""


class nnUNetTrainerE3nnCompact(nnUNetTrainerE3nn):
    """``nnUNetTrainerE3nn`` under the name its recipe was measured with before it became the default (3^3
    kernels, ``12x0e+3x1e+1x2e``, the invariant head, off-grid rotations; docs/offgrid_real_anatomy.md):
    the same trainer, kept so that models trained under this name keep loading."""
