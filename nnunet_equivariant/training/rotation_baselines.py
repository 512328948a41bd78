"""Stock nnU-Net with three rotation-augmentation ranges: the baselines of the steerable networks.

The paper (Diaz et al., Sections 4-5) compares its equivariant U-Net with nnU-Net trained without
rotation augmentation, with +-20 deg and with full rotations. These trainers are nnU-Net's
``nnUNetTrainer`` with only the rotation range changed (and the loaded crop sized for it, see
:mod:`nnunet_equivariant.training.rotation`); nnU-Net's own default is +-30 deg.
"""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_equivariant.training.rotation import RotationAugmentationMixin

__all__ = ["nnUNetTrainerNoRot", "nnUNetTrainerRot20", "nnUNetTrainerRot180"]


class nnUNetTrainerNoRot(RotationAugmentationMixin, nnUNetTrainer):
    """nnU-Net without rotation augmentation."""

    rotation_range_deg = 0


class nnUNetTrainerRot20(RotationAugmentationMixin, nnUNetTrainer):
    """nnU-Net rotating by a uniform angle in [-20, 20] deg about each axis."""

    rotation_range_deg = 20


class nnUNetTrainerRot180(RotationAugmentationMixin, nnUNetTrainer):
    """nnU-Net with full rotations: a uniform angle in [-180, 180] deg about each axis."""

    rotation_range_deg = 180
