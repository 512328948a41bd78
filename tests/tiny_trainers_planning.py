"""Test-only trainers of the planning/evaluation tests (shims in ``tests/trainers``).

``nnUNetTrainer_pointwise_tiny`` trains a network of 1x1x1 convolutions only. Such a network commutes
exactly with every permutation of voxels, so with image size == patch size (one sliding window, a
symmetric Gaussian) its prediction of a case rotated by 90 degrees is the rotated prediction: the exactly
equivariant reference for ``rotation_eval``, independent of the steerable layers.
"""
import torch
from nnunetv2.training.nnUNetTrainer.variants.network_architecture.nnUNetTrainerNoDeepSupervision import (
    nnUNetTrainerNoDeepSupervision,
)
from torch import nn

from tiny_trainers import TinySchedule


class nnUNetTrainer_pointwise_tiny(TinySchedule, nnUNetTrainerNoDeepSupervision):
    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        width = 16
        return nn.Sequential(nn.Conv3d(num_input_channels, width, 1), nn.LeakyReLU(),
                             nn.Conv3d(width, width, 1), nn.LeakyReLU(), nn.Conv3d(width, num_output_channels, 1))

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """No decoder, no deep supervision."""
