"""Real-anatomy reader and renderer, on small generated files in the on-disk format of the package's
``aseg_subcortex`` (float labels only close to integers, RAS and LIA orientations, header-less lookup CSV
without a final newline)."""
import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from aseg_files import LEFT, RIGHT, write_atlases
from nnunet_equivariant.synthetic_anatomy import AnatomyStyle
from nnunet_equivariant.real_anatomy import (LABELS, read_aseg_sources, read_label_map, render_subject,
                                             sample_subject, subject_classes)

@pytest.fixture(scope="module")
def atlases(tmp_path_factory):
    return write_atlases(tmp_path_factory.mktemp("atlases"))


def test_reader_rounds_float_labels_and_reads_the_headerless_lookup(atlases):
    labels, affine, names = read_label_map(atlases / "TplLIA" / "aseg_subcortex" / "aseg_subcortex.nii.gz",
                                           atlases / "TplLIA" / "aseg_subcortex" / "aseg_subcortex_lookup.csv")
    assert names[58] == "accumbens-rh" and len(names) == 14
    assert set(np.unique(labels)) == {0, *LEFT, *RIGHT}
    assert affine[1, 2] == 1 and affine[2, 1] == -1, "the file's LIA affine is kept"


def test_reader_rejects_non_integer_and_unknown_labels(tmp_path, atlases):
    lookup = atlases / "TplRAS" / "aseg_subcortex" / "aseg_subcortex_lookup.csv"
    bad = np.zeros((4, 4, 4), dtype=np.float32)
    bad[1, 1, 1] = 10.4
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(tmp_path / "fractional.nii.gz"))
    with pytest.raises(ValueError, match="fractional.nii.gz: label values must be integers"):
        read_label_map(tmp_path / "fractional.nii.gz", lookup)
    bad[1, 1, 1] = 7
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(tmp_path / "unknown.nii.gz"))
    with pytest.raises(ValueError, match=r"unknown.nii.gz: labels \[7\] are not in"):
        read_label_map(tmp_path / "unknown.nii.gz", lookup)


def test_sources_are_independent_of_file_orientation_and_hemisphere(atlases):
    """The same anatomy stored RAS (float32) and LIA (float64), left and mirrored right hemisphere: all four
    sources give the same labels at the same points."""
    sources = read_aseg_sources(atlases, templates=("TplRAS", "TplLIA"))
    assert [s.name for s in sources] == ["TplRAS-lh", "TplRAS-rh", "TplLIA-lh", "TplLIA-rh"]
    assert all(s.centre[0] < 0 for s in sources), "right hemispheres are mirrored onto the left"
    points = np.stack(np.meshgrid(*[np.arange(-9.0, 10.0)] * 3, indexing="ij"), -1)
    reference = None
    for source in sources:
        np.testing.assert_allclose(source.centre, sources[0].centre, atol=1e-9)
        subject = sample_subject(source, np.random.default_rng(0), deformation=0.0)
        classes = subject_classes(subject, points)
        if reference is None:
            reference = classes
            assert set(np.unique(classes)) == set(LABELS.values()), "every structure is present"
        # nearest neighbour exactly between two voxels may round either way in another orientation
        assert np.mean(classes != reference) < 0.01, source.name


def test_rendering_is_seeded_and_grid_rotations_rotate_labels_exactly(atlases):
    source = read_aseg_sources(atlases, templates=("TplRAS",))[0]
    subject = sample_subject(source, np.random.default_rng(5))
    image, label = render_subject(subject, (12, 12, 12), (2.0, 2.0, 2.0))
    again = render_subject(sample_subject(source, np.random.default_rng(5)), (12, 12, 12), (2.0, 2.0, 2.0))
    assert np.array_equal(image, again[0]) and np.array_equal(label, again[1])
    assert len(np.unique(label)) >= 6, "most structures are visible at 2 mm"
    for axis, axes in (("z", (0, 1)), ("x", (1, 2)), ("y", (2, 0))):
        R = Rotation.from_euler(axis, 90, degrees=True).as_matrix()
        image_r, label_r = render_subject(subject, (12, 12, 12), (2.0, 2.0, 2.0), rotation=R)
        assert np.array_equal(np.rot90(label, 1, axes=axes), label_r), f"labels about {axis}: no interpolation"
        # the bias field and noise belong to the scanner: without them the image rotates exactly too
        clean = render_subject(subject, (12, 12, 12), (2.0, 2.0, 2.0), style=AnatomyStyle(noise=0.0, bias=0.0))[0]
        clean_r = render_subject(subject, (12, 12, 12), (2.0, 2.0, 2.0), rotation=R,
                                 style=AnatomyStyle(noise=0.0, bias=0.0))[0]
        np.testing.assert_allclose(np.rot90(clean, 1, axes=axes), clean_r, atol=1e-6)
        assert not np.allclose(np.rot90(image, 1, axes=axes), image_r, atol=1e-3), "noise stays in the scanner"


def test_anisotropic_rendering_blurs_along_the_thick_axis(atlases):
    """Per-axis point-spread function: a 1 x 1 x 3 mm style blurs z more than x and y."""
    source = read_aseg_sources(atlases, templates=("TplRAS",))[0]
    subject = sample_subject(source, np.random.default_rng(2))
    clean = AnatomyStyle(noise=0.0, bias=0.0)
    sharp, _ = render_subject(subject, (24, 24, 8), (1.0, 1.0, 3.0), style=clean)
    thick = AnatomyStyle(psf_sigma=(0.8, 0.8, 2.4), noise=0.0, bias=0.0)
    blurred, label = render_subject(subject, (24, 24, 8), (1.0, 1.0, 3.0), style=thick)
    assert label.shape == (24, 24, 8)
    gz = np.abs(np.diff(blurred, axis=2)).mean() / np.abs(np.diff(sharp, axis=2)).mean()
    gx = np.abs(np.diff(blurred, axis=0)).mean() / np.abs(np.diff(sharp, axis=0)).mean()
    assert gz < 0.8 * gx, (gx, gz)
