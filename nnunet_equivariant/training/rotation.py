"""Rotation augmentation as one trainer setting: off, +-N degrees about each axis, or stock.

nnU-Net configures rotation in ``configure_rotation_dummyDA_mirroring_and_inital_patch_size``: the angle
range given to its ``SpatialTransform`` (applied with p = 0.2 per sample, p = 0.2 for scaling) and the size
of the crop loaded before augmentation. This mixin changes the range and sizes that crop so that it holds
every augmented patch; mirroring, probabilities and every other augmentation stay stock.

Why the crop needs its own sizing: nnU-Net's ``get_patch_size`` caps angles at 90 deg, rotates the patch
about one axis at a time and allows for a zoom-out of 1 / 0.85, while its ``SpatialTransform`` composes
all three rotations and zooms out by up to 1.4. For a full rotation range a patch's diagonal can point
along any axis, and about 8 % of a rotated cubic patch then comes from padding (label -1 in the
segmentation, 0 in the image), which teaches the network nothing but the crop's border.

Convention
----------
- Sizes are in voxels of the preprocessed data, axes in nnU-Net's data order 0, 1, 2.
- ``SpatialTransform`` samples the crop at ``q = R S p`` (``p``: offset of a patch voxel centre from the
  patch centre, ``R = Rz Ry Rx`` with one angle per axis, ``S`` the zoom-out factor) around the crop
  centre. Linear interpolation reads only crop voxels iff ``|q_i| <= (crop_i - 1) / 2`` for every axis.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = ["RotationAugmentationMixin", "loaded_crop_size", "NNUNET_MAX_ZOOM_OUT"]

# Largest scale of nnU-Net's SpatialTransform (nnUNetTrainer.get_training_transforms: scaling=(0.7, 1.4);
# a scale s > 1 samples s times the patch's extent, "larger numbers = smaller objects").
NNUNET_MAX_ZOOM_OUT = 1.4

# Angle samples per axis when the range is not the full circle (see _max_rotated_extent).
_ANGLE_SAMPLES = 41


class RotationAugmentationMixin:
    """Trainer mixin. Set ``rotation_range_deg``: ``None`` keeps nnU-Net's choice, ``0`` switches rotation
    off, ``N`` in ``(0, 180]`` rotates by a uniform angle in ``[-N, N]`` degrees about each axis (in plane
    only where nnU-Net uses its dummy-2D augmentation for anisotropic patches).

    For every value but ``None`` the loaded crop is sized by :func:`loaded_crop_size`, so no padding enters
    an augmented patch whatever angles and zoom nnU-Net draws.
    """

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
        initial_patch_size = loaded_crop_size(self.configuration_manager.patch_size, angle, dummy_2d=dummy_2d)
        self.print_to_log_file(
            f"rotation augmentation: +-{self.rotation_range_deg} deg, loaded crop {initial_patch_size.tolist()}"
        )
        return rotation, dummy_2d, initial_patch_size, mirror_axes


def loaded_crop_size(
    patch_size: Sequence[int],
    max_angle: float,
    max_zoom_out: float = NNUNET_MAX_ZOOM_OUT,
    dummy_2d: bool = False,
) -> np.ndarray:
    """Smallest crop (voxels per axis) that holds ``patch_size`` rotated by any angles in
    ``[-max_angle, max_angle]`` (radians) about each axis and zoomed out by up to ``max_zoom_out``.

    ``dummy_2d``: nnU-Net rotates in the plane of axes 1 and 2 only; axis 0 keeps the patch size.
    For ``max_angle >= pi`` the bound is the patch's circumscribed sphere (exact); for smaller ranges it
    is the largest rotated extent over a grid of angles plus the grid's worst-case error (a safe bound,
    a few voxels above the exact one).
    """
    patch_size = np.asarray(patch_size, dtype=np.int64)
    if patch_size.ndim != 1 or len(patch_size) not in (2, 3) or np.any(patch_size < 1):
        raise ValueError(f"patch_size must be 2 or 3 positive ints, got {patch_size.tolist()}")
    if max_angle < 0 or max_zoom_out <= 0:
        raise ValueError(f"need max_angle >= 0 and max_zoom_out > 0, got {max_angle}, {max_zoom_out}")
    rotated_axes = [1, 2] if (dummy_2d and len(patch_size) == 3) else list(range(len(patch_size)))
    half = (patch_size[rotated_axes] - 1) / 2.0
    extent = _max_rotated_extent(half, max_angle) * max_zoom_out
    crop = patch_size.copy()
    # |q_i| <= (crop_i - 1) / 2; the small tolerance keeps exact cases (no rotation, zoom 1) at patch size
    crop[rotated_axes] = np.maximum(patch_size[rotated_axes], np.ceil(2 * extent + 1 - 1e-6).astype(np.int64))
    return crop


def _max_rotated_extent(half: np.ndarray, max_angle: float) -> np.ndarray:
    """Per axis, an upper bound of ``max |(R c)_i|`` over the patch corners ``c`` (half-sizes ``half``) and
    the rotations ``R`` nnU-Net draws with every angle in ``[-max_angle, max_angle]``."""
    radius = float(np.linalg.norm(half))
    if max_angle >= np.pi:
        return np.full(len(half), radius)
    corners = np.array(np.meshgrid(*[(-h, h) for h in half], indexing="ij")).reshape(len(half), -1)
    a = np.linspace(-max_angle, max_angle, _ANGLE_SAMPLES)
    rotations = _rotations_2d(a) if len(half) == 2 else _rotations_3d(*np.meshgrid(a, a, a, indexing="ij"))
    extent = np.abs(rotations @ corners).max(axis=(0, 2))
    # |d(R c)_i / d angle| <= |c|, and every angle lies within half a grid step of a sample
    step = a[1] - a[0] if max_angle > 0 else 0.0
    error = (3 if len(half) == 3 else 1) * step / 2 * radius
    return np.minimum(extent + error, radius)


def _rotations_2d(angle: np.ndarray) -> np.ndarray:
    """In-plane rotations by ``angle`` (radians), shape ``(n, 2, 2)``."""
    return Rotation.from_euler("z", np.ravel(angle)).as_matrix()[:, :2, :2]


def _rotations_3d(ax: np.ndarray, ay: np.ndarray, az: np.ndarray) -> np.ndarray:
    """``Rz @ Ry @ Rx`` as in batchgeneratorsv2's ``create_affine_matrix_3d`` (extrinsic x, y, z), ``(n, 3, 3)``."""
    return Rotation.from_euler("xyz", np.stack([np.ravel(t) for t in (ax, ay, az)], -1)).as_matrix()
