"""Test-only trainers: the public trainers with a schedule short enough for CPU tests, seeded.

Shims in ``tests/trainers`` re-export them (the same layout as the package's own shims), so the
classes live in an importable module and can be pickled. nnU-Net's trainer lookup imports every shim
in that folder (in name order) anyway, so one module for all of them costs no extra imports.
"""
import random

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn
from nnunet_equivariant.training.mirror import nnUNetTrainerMirror

SEED = 0


def seed_everything(seed: int = SEED) -> None:
    """Seed every random source a tiny nnU-Net training draws from (the one place tests seed training).

    Python's ``random``, numpy's global generator (nnU-Net's data loader picks cases and crops with
    ``np.random``; batchgeneratorsv2's transforms draw from numpy and torch) and torch (weight
    initialisation). nnU-Net's augmentation workers (``nnUNet_n_proc_DA`` > 0) run in
    a ``NonDetMultiThreadedAugmenter`` that hands out batches in arrival order, which no seed fixes: the
    training is deterministic only with ``nnUNet_n_proc_DA=0`` (a ``SingleThreadedAugmenter`` in the
    training process), so this refuses the other case instead of training an unseeded model quietly.
    """
    workers = get_allowed_n_proc_DA()
    if workers != 0:
        raise ValueError(f"nnUNet_n_proc_DA={workers}: the seeded test trainers need 0 (augmentation in the "
                         "training process); worker processes deliver batches in a nondeterministic order")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TinySchedule:
    """One epoch of 2 training and 1 validation iteration (then nnU-Net's full final validation), seeded:
    the same plans and data give the same checkpoint on every run on one machine."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1

    def on_train_start(self):
        # before initialize() builds the network and get_dataloaders() draws the first batch
        seed_everything()
        super().on_train_start()


class nnUNetTrainer_tiny(TinySchedule, nnUNetTrainer):
    pass


class nnUNetTrainerE3nn_tiny(TinySchedule, nnUNetTrainerE3nn):
    pass


class nnUNetTrainerMirror_tiny(TinySchedule, nnUNetTrainerMirror):
    pass
