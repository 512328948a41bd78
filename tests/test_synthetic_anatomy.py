"""SynthSeg-style anatomy: rendered in any pose by evaluating the subject at rotated coordinates."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from nnunet_equivariant.synthetic_anatomy import (LABELS, partial_volume_classes, render_subject, sample_subject,
                                                  subject_labels)


@pytest.fixture(scope="module")
def subject():
    return sample_subject(np.random.default_rng(3), scale=0.5)  # fits 16 mm: half the default anatomy


def test_grid_rotation_of_the_pose_is_an_exact_rotation_of_the_volume(subject):
    image, label = render_subject(subject, (16, 16, 16))
    assert set(np.unique(label)) == set(LABELS.values()), "every structure is present"
    R = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    image_r, label_r = render_subject(subject, (16, 16, 16), rotation=R)
    assert np.array_equal(np.rot90(label, 1, axes=(0, 1)), label_r), "labels: no interpolation"
    # the bias field and the noise belong to the scanner: only the anatomy part rotates
    assert np.corrcoef(np.rot90(image, 1, axes=(0, 1)).ravel(), image_r.ravel())[0, 1] > 0.95


def test_off_grid_pose_keeps_structure_sizes(subject):
    _, label = render_subject(subject, (16, 16, 16))
    _, label_45 = render_subject(subject, (16, 16, 16), rotation=Rotation.from_euler("x", 45, degrees=True).as_matrix())
    for value in range(1, 5):
        n0, n45 = (label == value).sum(), (label_45 == value).sum()
        assert abs(n45 - n0) <= 0.35 * n0 + 3, f"label {value}: {n0} voxels at 0 degrees, {n45} at 45"


def test_render_rejects_a_matrix_that_is_not_a_rotation(subject):
    with pytest.raises(ValueError, match="rotation must be a 3x3 orthogonal matrix"):
        render_subject(subject, (8, 8, 8), rotation=2 * np.eye(3))


def test_partial_volume_classes_take_the_majority_of_each_voxel_and_turn_with_the_grid(subject):
    """The class covering most of a voxel, not the one at its centre; ties to the centre's class; a quarter
    turn of the pose is the quarter turn of the label map; mostly the centre's class on a smooth subject."""
    labels_at = lambda points: subject_labels(subject, points)  # noqa: E731
    pv = partial_volume_classes(labels_at, (16, 16, 16), (1.0, 1.0, 1.0), None, len(LABELS))
    _, centre = render_subject(subject, (16, 16, 16))
    assert pv.shape == centre.shape and pv.dtype == np.uint8
    assert 0.9 < (pv == centre).mean() < 1, "the two labellings differ only at some boundaries"
    R = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    turned = partial_volume_classes(labels_at, (16, 16, 16), (1.0, 1.0, 1.0), R, len(LABELS))
    assert np.array_equal(np.rot90(pv, 1, axes=(0, 1)), turned)

    # one 3 mm voxel: its 27 points at -1, 0, 1 mm per axis
    def sheet(points):  # a plane one point thick through the centre: the centre's class, 9 of 27 points
        return np.where(np.abs(points[..., 0]) < 0.5, 1, 0)

    assert partial_volume_classes(sheet, (1, 1, 1), (3.0, 3.0, 3.0), None, 2)[0, 0, 0] == 0

    def tie(points):  # 13 points of class 1, 13 of class 2 (the centre's), 1 of class 0
        x, y, z = np.moveaxis(np.rint(points), -1, 0)
        middle = np.where(y > 0, 1, np.where(y < 0, 2, np.where(z < 0, 1, np.where(z > 0, 0, 2))))
        return np.where(x < 0, 1, np.where(x > 0, 2, middle))

    assert partial_volume_classes(tie, (1, 1, 1), (3.0, 3.0, 3.0), None, 3)[0, 0, 0] == 2
