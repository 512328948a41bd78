"""Rotate a test case about its centre in physical space, on its own voxel grid.

Convention
----------
- Physical coordinates are ITK's patient coordinates (LPS): x runs right -> left, y anterior -> posterior,
  z inferior -> superior. The image's :class:`~nnunet_equivariant.geometry.Geometry` (``origin``,
  ``spacing`` and ``direction``, as SimpleITK and nnU-Net's ``SimpleITKIO`` report them in
  ``properties["sitk_stuff"]``) maps voxel indices to them, so anisotropic spacing and oblique directions
  are handled.
- Planes are anatomical and defined in that space, not by array axes: ``axial`` rotates about z (the
  x-y plane), ``coronal`` about y (the x-z plane), ``sagittal`` about x (the y-z plane). A positive angle
  turns counter-clockwise by the right-hand rule about the positive axis (axial: x towards y).
- The rotation is about the centre of the voxel grid, and the rotated case is resampled onto the
  original grid: ``out(p) = in(c + R^T (p - c))``. Image: cubic B-spline; label: nearest neighbour.
- Field of view (FOV): the voxels whose source point lies inside the original image, i.e. within half a
  voxel of its outermost voxel centres (ITK's inside-buffer test). Voxels outside it get the median of
  the image's outermost voxel layer (its background) per channel, and label 0; they do not count in Dice.
- A rotation that maps voxel centres onto voxel centres (90-degree steps on a grid whose spacing allows
  it, and 0 degrees) is applied exactly, as a permutation of voxels, with no interpolation.

Arrays are nnU-Net's: ``(channels, z, y, x)`` numpy order, the reverse of ITK's index order.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from nnunet_equivariant.geometry import Geometry

__all__ = ["PLANES", "plane_rotation", "Geometry", "rotate_case"]

# rotation axis of each anatomical plane, as an index into physical (x, y, z)
PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}


def plane_rotation(plane: str, angle_deg: float) -> np.ndarray:
    """3x3 rotation in physical (x, y, z) by ``angle_deg`` within ``plane`` (see the module Convention)."""
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {sorted(PLANES)}, got {plane!r}")
    # right-hand rule about the plane's axis: x -> y about z, y -> z about x, z -> x about y
    return Rotation.from_euler("xyz"[PLANES[plane]], angle_deg, degrees=True).as_matrix()


def rotate_case(
    image: np.ndarray, label: np.ndarray, geometry: Geometry, rotation: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotate ``image (c, z, y, x)`` and ``label (1, z, y, x)`` by the physical ``rotation`` about the grid
    centre. Returns ``(image, label, fov)`` on the same grid, ``fov (z, y, x)`` bool."""
    if label.shape[1:] != image.shape[1:]:
        raise ValueError(f"label shape {label.shape[1:]} differs from image shape {image.shape[1:]}")
    background = np.array([np.median(_outer_layer(c)) for c in image], dtype=image.dtype)
    a, b = geometry.index_map(rotation)
    exact = _as_voxel_permutation(a, b)
    if exact is not None:
        image_r, label_r, fov = _permute(image, label, *exact)
    else:
        image_r, label_r, fov = _resample(image, label, geometry, rotation)
    image_r[:, ~fov] = background[:, None]
    label_r[:, ~fov] = 0
    return image_r, label_r, fov


def _outer_layer(volume: np.ndarray) -> np.ndarray:
    inner = np.zeros(volume.shape, dtype=bool)
    inner[tuple(slice(1, -1) for _ in volume.shape)] = True
    return volume[~inner]


def _as_voxel_permutation(a: np.ndarray, b: np.ndarray):
    """``(A, b)`` as integers in numpy axis order if the map sends voxel centres onto voxel centres."""
    a_int, b_int = np.round(a), np.round(b)
    is_signed_permutation = np.all(np.abs(a_int).sum(0) == 1) and np.all(np.abs(a_int).sum(1) == 1)
    if not (is_signed_permutation and np.allclose(a, a_int, atol=1e-9) and np.allclose(b, b_int, atol=1e-6)):
        return None
    rev = [2, 1, 0]  # ITK (x, y, z) -> numpy (z, y, x)
    return a_int[np.ix_(rev, rev)].astype(np.int64), b_int[rev].astype(np.int64)


def _permute(image, label, a, b):
    """Exact ``out[o] = in[a @ o + b]`` (numpy axis order); out-of-range sources are outside the FOV."""
    shape = image.shape[1:]
    out_axis = [int(np.flatnonzero(a[j])[0]) for j in range(3)]  # source axis j follows output axis out_axis[j]
    index, valid = [], []
    for j, k in enumerate(out_axis):
        src = a[j, k] * np.arange(shape[k]) + b[j]
        valid.append((src >= 0) & (src < shape[j]))
        index.append(np.clip(src, 0, shape[j] - 1))
    order = [out_axis.index(k) for k in range(3)]  # gathered axis j -> output axis out_axis[j]
    grid = np.ix_(*index)
    fov = (valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]).transpose(order)
    image_r = np.stack([c[grid].transpose(order) for c in image])
    label_r = np.stack([c[grid].transpose(order) for c in label])
    return image_r, label_r, fov


def _resample(image, label, geometry, rotation):
    import SimpleITK as sitk

    transform = sitk.AffineTransform(3)
    transform.SetMatrix((rotation.T).ravel().tolist())  # maps output points to source points
    transform.SetCenter(geometry.physical_point((np.asarray(geometry.size) - 1) / 2.0).tolist())

    def resample(volume, interpolator):
        src = geometry.to_sitk(volume)
        return sitk.GetArrayFromImage(sitk.Resample(src, src, transform, interpolator, 0.0))

    image_r = np.stack([resample(np.ascontiguousarray(c), sitk.sitkBSpline) for c in image]).astype(image.dtype)
    label_r = np.stack([resample(np.ascontiguousarray(c), sitk.sitkNearestNeighbor) for c in label])
    fov = resample(np.ones(image.shape[1:], dtype=np.uint8), sitk.sitkNearestNeighbor).astype(bool)
    return image_r, label_r.astype(label.dtype), fov
