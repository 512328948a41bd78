"""Rotating a case in physical space: planes, anisotropic spacing, oblique directions, field of view."""
import numpy as np
import pytest
from scipy import ndimage

from nnunet_equivariant.evaluation import rotate as module
from nnunet_equivariant.evaluation.rotate import PLANES, plane_rotation, rotate_case
from nnunet_equivariant.geometry import Geometry


def test_plane_rotations_follow_the_right_hand_rule():
    x, y, z = np.eye(3)
    assert np.allclose(plane_rotation("axial", 90) @ x, y), "axial: about z, x turns towards y"
    assert np.allclose(plane_rotation("sagittal", 90) @ y, z), "sagittal: about x, y turns towards z"
    assert np.allclose(plane_rotation("coronal", 90) @ z, x), "coronal: about y, z turns towards x"
    for plane, axis in PLANES.items():
        rot = plane_rotation(plane, 37.0)
        assert np.allclose(rot @ rot.T, np.eye(3)) and np.isclose(np.linalg.det(rot), 1)
        assert np.allclose(rot[:, axis], np.eye(3)[axis]), f"the {plane} rotation keeps its axis"
    with pytest.raises(ValueError, match="plane"):
        plane_rotation("oblique", 10)


def _oblique_geometry(size=(30, 26, 14), spacing=(0.8, 1.0, 2.5)):
    direction = plane_rotation("axial", 20) @ plane_rotation("sagittal", -10)  # columns: index axes in space
    return Geometry(size, spacing, (10.0, -4.0, 7.0), tuple(direction.ravel()))


def _index_to_physical(geometry, index_xyz):
    d = np.asarray(geometry.direction).reshape(3, 3)
    return np.asarray(geometry.origin) + d @ (np.asarray(geometry.spacing) * index_xyz)


@pytest.mark.parametrize("plane", sorted(PLANES))
def test_a_point_moves_to_its_rotated_physical_position(plane):
    geometry = _oblique_geometry()
    shape_zyx = geometry.size[::-1]
    label = np.zeros((1, *shape_zyx), dtype=np.float32)
    blob_xyz = np.array([18, 15, 8])
    zz, yy, xx = np.indices(shape_zyx)
    near = ((xx - blob_xyz[0]) * geometry.spacing[0]) ** 2 + ((yy - blob_xyz[1]) * geometry.spacing[1]) ** 2 \
        + ((zz - blob_xyz[2]) * geometry.spacing[2]) ** 2 <= 3.0 ** 2
    label[0][near] = 1
    image = label * 5 + 1
    rot = plane_rotation(plane, 30)
    image_r, label_r, fov = rotate_case(image, label, geometry, rot)

    centre = _index_to_physical(geometry, (np.asarray(geometry.size) - 1) / 2)
    expected = centre + rot @ (_index_to_physical(geometry, blob_xyz) - centre)
    for volume in (label_r[0], image_r[0] - 1):
        com_zyx = np.array(ndimage.center_of_mass(np.clip(volume, 0, None)))
        found = _index_to_physical(geometry, com_zyx[::-1])
        assert np.linalg.norm(found - expected) < 0.5, f"{plane}: the blob lies where the rotation takes it"
    assert fov.shape == tuple(shape_zyx) and 0.4 < fov.mean() < 1


def test_ninety_degrees_is_an_exact_permutation_matching_itk_resampling():
    rng = np.random.default_rng(0)
    geometry = Geometry((16, 16, 10), (1.2, 1.2, 3.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    image = rng.normal(size=(2, 10, 16, 16)).astype(np.float32)
    label = (image[:1] > 0.5).astype(np.float32)
    rot = plane_rotation("axial", 90)  # in-plane spacing is isotropic: voxel centres map to voxel centres
    image_r, label_r, fov = rotate_case(image, label, geometry, rot)
    assert fov.all()
    assert np.array_equal(image_r, np.rot90(image, k=1, axes=(3, 2))), "exact, no interpolation"
    itk_image, itk_label, itk_fov = module._resample(image, label, geometry, rot)
    assert np.allclose(image_r, itk_image, atol=1e-5) and np.array_equal(label_r, itk_label)
    assert np.array_equal(fov, itk_fov)
    assert np.array_equal(rotate_case(image, label, geometry, np.eye(3))[0], image), "0 deg is the identity"

    coronal = plane_rotation("coronal", 90)  # mixes 1.2 mm and 3 mm axes: resampled, not permuted
    a, b = geometry.index_map(coronal)
    assert module._as_voxel_permutation(a, b) is None


def test_outside_the_field_of_view_is_background():
    rng = np.random.default_rng(1)
    geometry = Geometry((24, 24, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    image = (rng.normal(size=(1, 8, 24, 24)) + 3).astype(np.float32)
    label = np.ones((1, 8, 24, 24), dtype=np.float32)
    image_r, label_r, fov = rotate_case(image, label, geometry, plane_rotation("axial", 45))
    # a square rotated by 45 deg keeps 2 (sqrt 2 - 1) = 83 % of itself in view
    assert abs(fov.mean() - 2 * (np.sqrt(2) - 1)) < 0.03
    assert (label_r[0][~fov] == 0).all() and (label_r[0][fov] == 1).all()
    assert np.allclose(image_r[0][~fov], np.median(module._outer_layer(image[0])))


def test_geometry_needs_itk_properties_and_3d():
    with pytest.raises(ValueError, match="SimpleITKIO"):
        Geometry.from_nnunet(np.zeros((1, 4, 4, 4)), {"spacing": [1, 1, 1]}, "case.nii.gz")
    with pytest.raises(ValueError, match="3D"):
        Geometry.from_nnunet(np.zeros((1, 1, 4, 4)), {"sitk_stuff": {"spacing": (1, 1), "origin": (0, 0),
                                                                   "direction": (1, 0, 0, 1)}}, "x.png")
    with pytest.raises(ValueError, match="label shape"):
        rotate_case(np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 4, 5)), _oblique_geometry((4, 4, 4)), np.eye(3))
