"""Test-only short-schedule variants of the steerable trainers (shims in ``tests/trainers``)."""
from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn, nnUNetTrainerE3nnO3
from tiny_trainers import TinySchedule


class nnUNetTrainerE3nn_tiny(TinySchedule, nnUNetTrainerE3nn):
    pass


class nnUNetTrainerE3nnO3_tiny(TinySchedule, nnUNetTrainerE3nnO3):
    pass
