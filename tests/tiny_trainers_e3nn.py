"""Test-only short-schedule variant of the steerable trainer (shim in ``tests/trainers``)."""
from tiny_trainers import TinySchedule

from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn


class nnUNetTrainerE3nn_tiny(TinySchedule, nnUNetTrainerE3nn):
    pass
