"""Rotation augmentation as one trainer setting: off, +-N degrees about each axis, or stock.

nnU-Net configures rotation in ``configure_rotation_dummyDA_mirroring_and_inital_patch_size``: the angle
range given to its ``SpatialTransform`` (applied with p = 0.2 per sample) and the size of the crop loaded
before augmentation, which must be large enough that the rotated patch holds no padding. This mixin
changes only the range and that crop; mirroring, scaling and every other augmentation stay stock.
"""
from __future__ import annotations

import numpy as np
from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size

__all__ = ["RotationAugmentationMixin"]

# nnU-Net's own scale range for sizing the loaded crop (its SpatialTransform scales by 0.7..1.4).
_CROP_SCALE_RANGE = (0.85, 1.25)


class RotationAugmentationMixin:
    """Set ``rotation_range_deg``: ``None`` keeps nnU-Net's choice, ``0`` switches rotation off,
    ``N`` rotates by a uniform angle in ``[-N, N]`` degrees about each axis."""

    rotation_range_deg: float | None = None

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if self.rotation_range_deg is None:
            return rotation, dummy_2d, initial_patch_size, mirror_axes
        if not 0 <= self.rotation_range_deg <= 180:
            raise ValueError(f"rotation_range_deg must be in [0, 180], got {self.rotation_range_deg}")
        angle = float(np.deg2rad(self.rotation_range_deg))
        rotation = (-angle, angle)
        patch_size = self.configuration_manager.patch_size
        initial_patch_size = self.loaded_crop_size(patch_size, angle)
        if dummy_2d:
            initial_patch_size[0] = patch_size[0]
        self.print_to_log_file(
            f"rotation augmentation: +-{self.rotation_range_deg} deg, loaded crop {list(initial_patch_size)}"
        )
        return rotation, dummy_2d, initial_patch_size, mirror_axes

    @staticmethod
    def loaded_crop_size(patch_size, angle: float) -> np.ndarray:
        """Crop (voxels) to load so that a patch rotated by up to ``angle`` radians holds no padding."""
        return get_patch_size(patch_size, (-angle, angle), (-angle, angle), (-angle, angle), _CROP_SCALE_RANGE)
