"""One image geometry for rotation evaluation and laterality: it places voxels where ITK does."""
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from nnunet_equivariant.geometry import Geometry


def _oblique_image(size=(5, 4, 3)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.arange(np.prod(size), dtype=np.float32).reshape(size[::-1]))
    image.SetSpacing((0.8, 1.5, 2.5))
    image.SetOrigin((12.0, -7.0, 3.5))
    image.SetDirection(tuple(Rotation.from_euler("zyx", [35, -20, 110], degrees=True).as_matrix().ravel()))
    return image


def test_voxels_lie_where_itk_puts_them():
    image = _oblique_image()
    geometry = Geometry.from_sitk(image)
    rng = np.random.default_rng(0)
    for index in rng.uniform(-1, 5, size=(5, 3)):
        assert np.allclose(geometry.physical_point(index),
                           image.TransformContinuousIndexToPhysicalPoint(index.tolist()), atol=1e-12)
    centre = geometry.physical_point((np.asarray(geometry.size) - 1) / 2)
    for axis in range(3):
        offsets = geometry.centred_coordinate(axis)
        assert offsets.shape == sitk.GetArrayFromImage(image).shape, "(z, y, x), the array's layout"
        for x, y, z in [(0, 0, 0), (4, 1, 2), (2, 3, 1)]:
            expected = image.TransformIndexToPhysicalPoint((x, y, z))[axis] - centre[axis]
            assert offsets[z, y, x] == pytest.approx(expected, abs=1e-12), f"axis {axis} at voxel {(x, y, z)}"
    with pytest.raises(ValueError, match="physical axis"):
        geometry.centred_coordinate(3)


def test_nnunet_reader_and_simpleitk_give_the_same_geometry(tmp_path):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    image = _oblique_image()
    sitk.WriteImage(image, str(tmp_path / "case_0000.nii.gz"))
    array, properties = SimpleITKIO().read_images([str(tmp_path / "case_0000.nii.gz")])
    from_nnunet = Geometry.from_nnunet(array, properties, "case_0000.nii.gz")
    from_sitk = Geometry.from_sitk(sitk.ReadImage(str(tmp_path / "case_0000.nii.gz")))
    assert from_nnunet.size == from_sitk.size == (5, 4, 3)
    for field in ("spacing", "origin", "direction"):
        assert np.allclose(getattr(from_nnunet, field), getattr(from_sitk, field), atol=1e-6), field


def test_to_sitk_round_trips_and_refuses_a_wrong_shape():
    image = _oblique_image()
    geometry = Geometry.from_sitk(image)
    back = geometry.to_sitk(sitk.GetArrayFromImage(image))
    assert Geometry.from_sitk(back) == geometry
    with pytest.raises(ValueError, match=r"\(z, y, x\) = \(3, 4, 5\)"):
        geometry.to_sitk(np.zeros((5, 4, 3), dtype=np.float32))
