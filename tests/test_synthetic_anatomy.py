"""SynthSeg-style anatomy: rendered in any pose by evaluating the subject at rotated coordinates."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from nnunet_equivariant.synthetic_anatomy import LABELS, render_subject, sample_subject


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
