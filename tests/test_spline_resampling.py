"""Cubic B-spline resampling for nnU-Net's SpatialTransform (``training/spline_resampling.py``), in float64:
an interpolating spline (the volume at its voxel centres), scipy's order-3 spline inside the volume, exact
quarter turns through batchgeneratorsv2's own transform, and the segmentation path left as it was."""
import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from scipy import ndimage

from nnunet_equivariant.training.spline_resampling import CubicSplineSpatialTransform, cubic_bspline_sample


def _identity_grid(shape, align_corners):
    axes = [torch.linspace(-1, 1, n, dtype=torch.float64) if align_corners
            else (torch.arange(n, dtype=torch.float64) * 2 + 1) / n - 1 for n in shape]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([z, y, x], -1)[None]  # grid_sample's order: the last axis first


@pytest.mark.parametrize("align_corners", [True, False])
def test_the_spline_passes_through_the_voxels(align_corners):
    volume = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 7, 9, 11)))
    grid = _identity_grid((7, 9, 11), align_corners).expand(2, -1, -1, -1, -1)
    np.testing.assert_allclose(cubic_bspline_sample(volume, grid, align_corners), volume, atol=1e-6)


def test_between_the_voxels_it_is_scipys_cubic_spline_and_reproduces_cubic_polynomials():
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(9, 11, 13))
    points = np.stack([rng.uniform(-1, n, 400) for n in volume.shape])  # up to a voxel beyond each edge
    grid = np.stack([2 * points[2 - c] / (volume.shape[2 - c] - 1) - 1 for c in range(3)], -1)
    sampled = cubic_bspline_sample(torch.from_numpy(volume)[None, None], torch.from_numpy(grid).view(1, -1, 1, 1, 3),
                                   align_corners=True).flatten().numpy()
    np.testing.assert_allclose(sampled, ndimage.map_coordinates(volume, points, order=3, mode="mirror"), atol=1e-6)

    i, j, k = np.indices((32, 32, 32)).astype(np.float64)
    cubic = 0.3 * i ** 3 - 0.1 * i * j * k + 0.05 * k ** 3 + j ** 2 - 2.0
    inner = rng.uniform(14, 17, (3, 200))  # where the mirrored edges reach the prefilter by alpha^14 ~ 1e-8
    grid = np.stack([2 * inner[2 - c] / 31 - 1 for c in range(3)], -1)
    sampled = cubic_bspline_sample(torch.from_numpy(cubic)[None, None], torch.from_numpy(grid).view(1, -1, 1, 1, 3),
                                   align_corners=True).flatten().numpy()
    a, b, c = inner
    np.testing.assert_allclose(sampled, 0.3 * a ** 3 - 0.1 * a * b * c + 0.05 * c ** 3 + b ** 2 - 2.0, rtol=1e-5)


def _rotating(transform_class, axis, angle):
    transform = SpatialTransform((16, 16, 16), 0, False, p_rotation=1, p_scaling=0,
                                 rotation=lambda *args, dim=0, **kwargs: angle if dim == axis else 0.0)
    return transform if transform_class is SpatialTransform else transform_class.from_transform(transform)


def test_the_transform_turns_images_exactly_by_quarter_turns_and_keeps_more_noise_off_the_grid():
    rng = np.random.default_rng(2)
    image = torch.from_numpy(rng.normal(size=(1, 16, 16, 16)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 3, (1, 16, 16, 16)).astype(np.int16))
    for axis in range(3):
        trilinear = _rotating(SpatialTransform, axis, np.pi / 2)(image=image, segmentation=labels)
        cubic = _rotating(CubicSplineSpatialTransform, axis, np.pi / 2)(image=image, segmentation=labels)
        np.testing.assert_allclose(cubic["image"], trilinear["image"], atol=1e-4)  # float32 grids
        assert torch.equal(cubic["segmentation"], trilinear["segmentation"]), "labels are resampled as before"
    inner = (0, *(slice(4, -4),) * 3)
    kept = {cls.__name__: _rotating(cls, 2, np.pi / 4)(image=image)["image"][inner].std() / image[inner].std()
            for cls in (SpatialTransform, CubicSplineSpatialTransform)}
    assert kept["SpatialTransform"] < 0.75 < kept["CubicSplineSpatialTransform"], kept


def test_wrong_shapes_and_paddings_are_named():
    volume = torch.zeros(1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match=r"grid must be \(N, X', Y', Z', 3\)"):
        cubic_bspline_sample(volume, torch.zeros(1, 4, 4, 4, 2))
    with pytest.raises(ValueError, match=r"volume must be \(N, C, X, Y, Z\), got shape \(4, 4, 4\)"):
        cubic_bspline_sample(volume[0, 0], torch.zeros(1, 4, 4, 4, 3))
    transform = _rotating(CubicSplineSpatialTransform, 2, 0.3)
    transform.padding_mode_image = "reflection"
    with pytest.raises(ValueError, match="'reflection'"):
        transform(image=torch.zeros(1, 16, 16, 16))
