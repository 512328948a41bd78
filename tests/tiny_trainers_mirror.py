"""Test-only short-schedule versions of the mirror-symmetric trainers."""
from tiny_trainers import TinySchedule

from nnunet_equivariant.training.mirror import nnUNetTrainerMirror


class nnUNetTrainerMirror_tiny(TinySchedule, nnUNetTrainerMirror):
    pass
