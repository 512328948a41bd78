"""Rotation augmentation restricted to what a grid-exact network's symmetries do not cover.

A network equivariant to the 24 rotations of the voxel grid (``nnUNetTrainerE3nn``: exact at multiples of
90 deg about each axis) learns nothing from a grid rotation of a training patch. About one axis, every
angle is a multiple of 90 deg plus a residual in ``[-45, 45]`` deg, so rotations within 45 deg about one
axis are, up to the grid's symmetries, every rotation about a coordinate axis; nnU-Net's stock +-30 deg
about all three axes at once, applied with p = 0.2, covers only part of that range and rarely. This
augmentation draws one axis (uniformly among the rotated ones) and one angle uniform in
``[-max, max]`` (45 deg by default), with a probability of its own (0.5 by default, nnU-Net's is 0.2).

How it enters nnU-Net: ``configure_rotation_dummyDA_mirroring_and_inital_patch_size`` returns the
sampler below as the rotation ``RandomScalar`` (batchgeneratorsv2's ``SpatialTransform`` calls it once per
axis, ``dim = 0, 1, 2`` in order, for each sample it rotates), the loaded crop is sized for the range by
:class:`~nnunet_equivariant.training.rotation.RotationAugmentationMixin`, and ``get_training_transforms``
sets the ``SpatialTransform``'s ``p_rotation``. Scaling, mirroring and the rest stay nnU-Net's.

Convention: angles in radians as batchgeneratorsv2 takes them (``R = Rz Ry Rx``, extrinsic x, y, z on the
data axes 0, 1, 2); with nnU-Net's dummy-2D augmentation (anisotropic patches) the data is 2D and only
the in-plane angle (the last) is used.
"""
from __future__ import annotations

import numpy as np

from .rotation import RotationAugmentationMixin

__all__ = ["OffGridRotationSampler", "OffGridRotationMixin"]


class OffGridRotationSampler:
    """Callable ``(image, dim) -> angle`` for batchgeneratorsv2: per rotated sample, one axis and one angle
    uniform in ``[-max_angle, max_angle]`` (radians), 0 about the other axes.

    ``SpatialTransform.get_parameters`` asks for ``dim = 0, ..., n - 1`` in order (``n`` the spatial
    dimensions of ``image``, shape ``(channels, *spatial)``); the draw happens at ``dim == 0``. In 2D
    only the last angle is used, so that is the one that rotates."""

    def __init__(self, max_angle: float, rng: np.random.Generator | None = None):
        if not 0 < max_angle <= np.pi:
            raise ValueError(f"max_angle must be in (0, pi] radians, got {max_angle}")
        self.max_angle = float(max_angle)
        self._rng = rng
        self._draw = (0, 0.0)

    def _random(self):
        return np.random if self._rng is None else self._rng  # nnU-Net seeds numpy's global generator

    def __call__(self, *args, image=None, dim: int = 0, **kwargs) -> float:
        n = 3 if image is None else image.ndim - 1
        if dim == 0:
            random = self._random()  # uniform() exists on numpy's module and on a Generator alike
            axis = min(int(random.uniform(0, 3)), 2) if n == 3 else n - 1
            self._draw = (axis, float(random.uniform(-self.max_angle, self.max_angle)))
        axis, angle = self._draw
        return angle if dim == axis else 0.0


class OffGridRotationMixin(RotationAugmentationMixin):
    """Trainer mixin: rotation within ``rotation_range_deg`` (45) about one axis, with probability
    ``rotation_probability`` (0.5) per sample. Put it before the trainer class in the bases.

    ``rotation_range_deg = 0`` switches rotation off and ``None`` keeps nnU-Net's stock rotations, as in
    :class:`~nnunet_equivariant.training.rotation.RotationAugmentationMixin` (``rotation_probability`` is
    then not used): the variants of a trainer with this mixin can opt out.

    ``rotation_mode_seg``: how the ``SpatialTransform`` that rotates (and scales) a sample resamples its
    labels, batchgeneratorsv2's ``mode_seg``: ``None`` keeps nnU-Net's (``"bilinear"``: the argmax of the
    interpolated one-hot map, which erodes structures a few voxels across; ``benchmarks/
    offgrid_augmentation_labels.py``), ``"nearest"`` keeps their volume on average but agrees less with a scan
    in that pose; trained on real anatomy at 3 mm it did not shrink the off-grid drop (docs/offgrid_real_anatomy.md).

    ``rotation_mode_image``: how it resamples the image: ``None`` keeps nnU-Net's (trilinear: a sample rotated by
    45 degrees keeps two thirds of its noise), ``"cubic"`` a cubic B-spline
    (:class:`~nnunet_equivariant.training.spline_resampling.CubicSplineSpatialTransform`, 88 %; about ten times
    the CPU time of the trilinear resampling, 9 % more per iteration of the default at 3 mm). Trained on real
    anatomy at 3 mm it changed neither the Dice at 0 degrees nor the off-grid drop beyond what seeds do; with
    ``rotation_probability = 1.0`` it recovered part of the Dice that trilinear resampling lost
    (docs/offgrid_real_anatomy.md)."""

    rotation_range_deg: float | None = 45
    rotation_probability: float = 0.5
    rotation_mode_seg: str | None = None
    rotation_mode_image: str | None = None

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self._off_grid():
            return rotation, dummy_2d, initial_patch_size, mirror_axes
        if not 0 < self.rotation_range_deg <= 180:
            raise ValueError(f"rotation_range_deg must be in (0, 180], got {self.rotation_range_deg}")
        self.print_to_log_file(f"off-grid rotation augmentation: one axis, +-{self.rotation_range_deg} deg, "
                               f"p = {self.rotation_probability}")
        return OffGridRotationSampler(np.deg2rad(self.rotation_range_deg)), dummy_2d, initial_patch_size, mirror_axes

    @classmethod
    def get_training_transforms(cls, *args, **kwargs):
        from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

        pipeline = super().get_training_transforms(*args, **kwargs)
        if not cls._off_grid():
            return pipeline
        if not 0 <= cls.rotation_probability <= 1:
            raise ValueError(f"rotation_probability must be in [0, 1], got {cls.rotation_probability}")
        spatial = [t for t in pipeline.transforms if isinstance(t, SpatialTransform)]
        if len(spatial) != 1:
            raise ValueError(f"expected one SpatialTransform in nnU-Net's training transforms, got {len(spatial)}")
        spatial[0].p_rotation = cls.rotation_probability
        if cls.rotation_mode_seg is not None:
            if cls.rotation_mode_seg not in ("bilinear", "nearest"):
                raise ValueError(f"rotation_mode_seg must be None, 'bilinear' or 'nearest', "
                                 f"got {cls.rotation_mode_seg!r}")
            spatial[0].mode_seg = cls.rotation_mode_seg
        if cls.rotation_mode_image is not None:
            if cls.rotation_mode_image not in ("bilinear", "cubic"):
                raise ValueError(f"rotation_mode_image must be None, 'bilinear' or 'cubic', "
                                 f"got {cls.rotation_mode_image!r}")
            if cls.rotation_mode_image == "cubic":
                from .spline_resampling import CubicSplineSpatialTransform

                index = pipeline.transforms.index(spatial[0])
                pipeline.transforms[index] = CubicSplineSpatialTransform.from_transform(spatial[0])
        return pipeline

    @classmethod
    def _off_grid(cls) -> bool:
        """Whether this trainer rotates off the grid (``rotation_range_deg`` neither ``0`` nor ``None``)."""
        return cls.rotation_range_deg is not None and cls.rotation_range_deg != 0
