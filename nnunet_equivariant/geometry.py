"""The voxel grid of a 3D image in physical space, as SimpleITK and nnU-Net's ``SimpleITKIO`` describe it.

One type for every part that needs to know where a voxel lies in the patient: rotation evaluation (rotate a
case about its centre in physical space) and laterality (which side of the midline a voxel is on).

Convention
----------
- Physical coordinates are ITK's patient coordinates (LPS): ``+x`` points to the patient's left, ``+y``
  posterior, ``+z`` superior.
- ``size``, ``spacing`` and ``origin`` are in ITK's index order ``(i, j, k)`` = ``(x, y, z)``;
  ``direction`` is the 3x3 matrix as 9 numbers, row-major, whose column ``i`` is the physical direction of
  index axis ``i``. Voxel index ``p`` lies at ``origin + direction @ (spacing * p)``.
- Arrays are numpy's view of the image, ``(z, y, x)`` (``sitk.GetArrayFromImage``; nnU-Net's readers add
  a channel axis in front: ``(c, z, y, x)``), the reverse of the index order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Geometry"]


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a 3D image: ``size``, ``spacing``, ``origin`` as (x, y, z), ``direction`` (9 numbers,
    row-major; columns are the index axes' directions). See the module Convention."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def from_sitk(cls, image) -> "Geometry":
        """The geometry of a SimpleITK image."""
        return cls(tuple(int(s) for s in image.GetSize()), tuple(map(float, image.GetSpacing())),
                   tuple(map(float, image.GetOrigin())), tuple(map(float, image.GetDirection())))

    @classmethod
    def from_nnunet(cls, array: np.ndarray, properties: dict, source: str = "image") -> "Geometry":
        """From an array ``(c, z, y, x)`` and the properties nnU-Net's reader returned with it (its
        ``"sitk_stuff"``). ``ValueError`` naming ``source`` if the reader gave no physical geometry (not
        ``SimpleITKIO``) or the image is not 3D."""
        sitk_stuff = properties.get("sitk_stuff")
        if sitk_stuff is None:
            raise ValueError(
                f"{source}: the reader reported no physical geometry ('sitk_stuff'); this needs nnU-Net's "
                f"SimpleITKIO (e.g. .nii.gz, .nrrd, .mha files)"
            )
        if array.ndim != 4 or len(sitk_stuff["spacing"]) != 3:
            raise ValueError(f"{source}: expected a 3D image, got an array of shape {array.shape}")
        return cls(tuple(int(s) for s in array.shape[:0:-1]), tuple(map(float, sitk_stuff["spacing"])),
                   tuple(map(float, sitk_stuff["origin"])), tuple(map(float, sitk_stuff["direction"])))

    @property
    def direction_matrix(self) -> np.ndarray:
        """``direction`` as a 3x3 float64 matrix."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def physical_point(self, index) -> np.ndarray:
        """Physical position of a (possibly fractional) voxel index ``(i, j, k)``."""
        return np.asarray(self.origin) + self.direction_matrix @ (np.asarray(self.spacing) * np.asarray(index))

    def centred_coordinate(self, axis: int) -> np.ndarray:
        """Physical coordinate ``axis`` (0 = LPS ``x``, the patient's left) of every voxel centre minus that of
        the grid centre, as a ``(z, y, x)`` array."""
        if axis not in (0, 1, 2):
            raise ValueError(f"physical axis must be 0, 1 or 2, got {axis!r}")
        i, j, k = (np.arange(n, dtype=np.float64) - (n - 1) / 2 for n in self.size)  # centred index axes
        row = self.direction_matrix[axis] * np.asarray(self.spacing, dtype=np.float64)
        return row[0] * i[None, None, :] + row[1] * j[None, :, None] + row[2] * k[:, None, None]

    def index_map(self, rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(A, b)``: the physical ``rotation`` about the grid centre, pulled back to indices; output voxel
        index ``p`` reads source index ``A @ p + b`` (ITK order)."""
        ds = self.direction_matrix @ np.diag(self.spacing)
        a = np.linalg.inv(ds) @ np.asarray(rotation).T @ ds
        m = (np.asarray(self.size) - 1) / 2.0
        return a, m - a @ m

    def to_sitk(self, array_zyx: np.ndarray):
        """A SimpleITK image of the ``(z, y, x)`` array on this grid."""
        import SimpleITK as sitk

        if tuple(array_zyx.shape) != tuple(self.size[::-1]):
            raise ValueError(f"array of shape {array_zyx.shape} does not fit the grid of size {self.size} "
                             f"(expected (z, y, x) = {tuple(self.size[::-1])})")
        image = sitk.GetImageFromArray(array_zyx)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image
