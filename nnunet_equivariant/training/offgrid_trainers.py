"""Steerable trainers with the levers of issue 17 against off-grid error (not the default): rotation
augmentation restricted to what the grid symmetries do not cover, an unlabelled off-grid consistency loss,
and the 3^3 recipe that measured best on real anatomy at 3 mm in equal CPU seconds."""
from __future__ import annotations

from dataclasses import replace

from .consistency import OffgridConsistencyMixin
from .e3nn import nnUNetTrainerE3nn
from .offgrid_rotation import OffGridRotationMixin

__all__ = ["nnUNetTrainerE3nnOffgridDA", "nnUNetTrainerE3nnConsistency", "nnUNetTrainerE3nnCompact"]


class nnUNetTrainerE3nnOffgridDA(OffGridRotationMixin, nnUNetTrainerE3nn):
    """``nnUNetTrainerE3nn`` trained with rotations within 45 deg about one axis, p = 0.5 per sample: the
    poses its grid symmetries do not already cover (see :mod:`~nnunet_equivariant.training.offgrid_rotation`)."""


class nnUNetTrainerE3nnConsistency(OffgridConsistencyMixin, nnUNetTrainerE3nn):
    """``nnUNetTrainerE3nn`` with the off-grid consistency term (weight 1, one rotated copy per batch within
    45 deg about one axis; see :mod:`~nnunet_equivariant.training.consistency`): about 1.5x a step at batch 2."""


class nnUNetTrainerE3nnCompact(nnUNetTrainerE3nnOffgridDA):
    """``nnUNetTrainerE3nnOffgridDA`` with 3^3 kernels, more scalars (irreps ratio ``12x0e+3x1e+1x2e``: 26
    dimensions at width 32 instead of ``8x0e+4x1e+2x2e``'s 30) and the invariant segmentation head.

    On real subcortical anatomy at 3 mm, trained for equal CPU seconds (docs/offgrid_real_anatomy.md, two
    seeds), it was the steerable network with the smallest off-grid deviation, level with stock nnU-Net +
    Adam at 0 degrees, at stock's cost per iteration; the paper's head and the 8 scalars of the 8:4:2 ratio had
    made the steerable networks switch classes on one at a time. Not the default: one spacing, a CPU.
    """

    spec = replace(nnUNetTrainerE3nnOffgridDA.spec, kernel_size=3, irreps_ratio="12x0e+3x1e+1x2e", head="invariants")
