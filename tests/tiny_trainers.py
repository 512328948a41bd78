"""Test-only trainers: the public trainers with a schedule short enough for CPU tests.

Shims in ``tests/trainers`` re-export them (the same layout as the package's own shims), so the
classes live in an importable module and can be pickled. nnU-Net's trainer lookup imports every shim
in that folder (in name order) anyway, so one module for all of them costs no extra imports.
"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn
from nnunet_equivariant.training.mirror import nnUNetTrainerMirror


class TinySchedule:
    """One epoch of 2 training and 1 validation iteration (then nnU-Net's full final validation)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1


class nnUNetTrainer_tiny(TinySchedule, nnUNetTrainer):
    pass


class nnUNetTrainerE3nn_tiny(TinySchedule, nnUNetTrainerE3nn):
    pass


class nnUNetTrainerMirror_tiny(TinySchedule, nnUNetTrainerMirror):
    pass
