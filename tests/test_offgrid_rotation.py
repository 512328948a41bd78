"""Off-grid rotation augmentation: the sampled rotations (float64) are rotations within 45 degrees about one
coordinate axis, and together with the 24 grid rotations they give every rotation about a coordinate axis;
nnU-Net's SpatialTransform receives them with the trainer's probability."""
import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from scipy.spatial.transform import Rotation

from nnunet_equivariant.training.offgrid_rotation import OffGridRotationMixin, OffGridRotationSampler
from nnunet_equivariant.training.rotation import _rotations_3d, loaded_crop_size

MAX = np.pi / 4


def _grid_rotations() -> np.ndarray:
    """The 24 rotations of the cube: signed permutation matrices of determinant +1 (exact, float64)."""
    out = []
    for perm in ([0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]):
        for signs in np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T:
            m = np.zeros((3, 3))
            m[np.arange(3), perm] = signs
            if np.linalg.det(m) > 0:
                out.append(m)
    return np.array(out)


def _draws(sampler, n, shape=(1, 6, 6, 6)):
    image = torch.zeros(shape)
    return np.array([[sampler(image=image, dim=d) for d in range(image.ndim - 1)] for _ in range(n)],
                    dtype=np.float64)


def test_sampled_rotations_are_within_45_degrees_about_one_axis():
    angles = _draws(OffGridRotationSampler(MAX, np.random.default_rng(0)), 3000)
    nonzero = np.count_nonzero(angles, axis=1)
    assert np.all(nonzero == 1), "exactly one axis per rotation"
    axis = np.argmax(np.abs(angles), axis=1)
    R = _rotations_3d(angles[:, 0], angles[:, 1], angles[:, 2])  # batchgeneratorsv2's Rz Ry Rx
    np.testing.assert_allclose(R[np.arange(len(R)), :, axis], np.eye(3)[axis], atol=1e-15)  # axis is fixed
    magnitude = Rotation.from_matrix(R).magnitude()
    assert magnitude.max() <= MAX + 1e-12
    # the range is filled (uniform): extremes reached, each axis and each half about equally often
    assert magnitude.max() > MAX - 0.01 and np.abs(angles).sum(1).min() < 0.01
    counts = np.bincount(axis, minlength=3)
    assert np.all(np.abs(counts - 1000) < 4 * np.sqrt(3000 * 2 / 9)), counts
    signed = angles.sum(1)
    assert abs(np.mean(signed > 0) - 0.5) < 0.04 and abs(np.mean(np.abs(signed) < MAX / 2) - 0.5) < 0.04


def test_grid_rotations_and_samples_give_every_rotation_about_an_axis():
    """For any angle about a coordinate axis: R(angle) = G R(residual), G one of the 24 grid rotations (the
    network is exact there) and |residual| <= 45 degrees, inside the sampled range."""
    grid = _grid_rotations()
    assert len(grid) == 24
    rng = np.random.default_rng(1)
    for axis in "xyz":
        for angle in rng.uniform(-np.pi, np.pi, size=50):
            residual = angle - np.pi / 2 * np.round(angle / (np.pi / 2))
            assert abs(residual) <= MAX + 1e-15
            target = Rotation.from_euler(axis, angle).as_matrix()
            G = target @ Rotation.from_euler(axis, residual).as_matrix().T
            assert np.min(np.abs(grid - G).max(axis=(1, 2))) < 1e-12, f"{axis} {angle}: not a grid rotation"


def test_sampler_in_2d_rotates_the_plane_and_rejects_bad_ranges():
    angles = _draws(OffGridRotationSampler(MAX, np.random.default_rng(2)), 200, shape=(1, 6, 6))
    assert np.all(angles[:, 0] == 0) and np.all(np.abs(angles[:, 1]) <= MAX) and np.count_nonzero(angles[:, 1]) == 200
    with pytest.raises(ValueError, match=r"max_angle must be in \(0, pi\] radians, got 4"):
        OffGridRotationSampler(4.0)


class _StockOffGrid(OffGridRotationMixin, nnUNetTrainer):
    pass


class _StockOffGridOff(_StockOffGrid):
    rotation_range_deg = 0


class _StockOffGridStock(_StockOffGrid):
    rotation_range_deg = None


def _trainer(tmp_path, monkeypatch, patch=(24, 24, 24), cls=_StockOffGrid):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    architecture = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": {}, "_kw_requires_import": []}
    plans = {"dataset_name": "Dataset999_Crop", "plans_name": "nnUNetPlans", "continue_training": False,
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
             "image_reader_writer": "SimpleITKIO", "label_manager": "LabelManager",
             "configurations": {"3d_fullres": {"patch_size": list(patch), "spacing": [1.0, 1.0, 1.0],
                                               "data_identifier": "x", "architecture": architecture}}}
    dataset_json = {"labels": {"background": 0, "fg": 1}, "channel_names": {"0": "x"}}
    return cls(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))


def test_trainer_hands_the_sampler_and_its_probability_to_nnunets_spatial_transform(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, monkeypatch)
    rotation, dummy_2d, crop, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert isinstance(rotation, OffGridRotationSampler) and rotation.max_angle == pytest.approx(MAX)
    assert np.array_equal(crop, loaded_crop_size((24, 24, 24), MAX)), "crop sized for the 45-degree range"
    pipeline = trainer.get_training_transforms((24, 24, 24), rotation, None, mirror_axes, dummy_2d)
    spatial = [t for t in pipeline.transforms if isinstance(t, SpatialTransform)]
    assert len(spatial) == 1 and spatial[0].p_rotation == 0.5 and spatial[0].rotation is rotation
    # the affine nnU-Net's transform builds keeps the chosen axis (up to its scaling) in every draw
    np.random.seed(0)
    spatial[0].p_scaling = 0.0
    rotated = 0
    for _ in range(200):
        affine = spatial[0].get_parameters(image=torch.zeros(1, 24, 24, 24))["affine"]
        if affine is None:
            continue
        rotated += 1
        fixed = np.isclose(np.abs(np.diag(affine)), 1, atol=1e-12)
        assert fixed.sum() >= 1 and Rotation.from_matrix(affine).magnitude() <= MAX + 1e-9
    assert 70 < rotated < 130, "p = 0.5"


@pytest.mark.parametrize("cls, angle", [(_StockOffGridOff, 0.0), (_StockOffGridStock, np.pi / 6)])
def test_variants_opt_out_with_zero_or_none_as_with_the_plain_rotation_setting(tmp_path, monkeypatch, cls, angle):
    """``rotation_range_deg = 0``: no rotation at all; ``None``: nnU-Net's own (+-30 deg about each axis, its
    p = 0.2): no off-grid sampler, and ``rotation_probability`` is not applied (``nnUNetTrainerE3nnNoRot``,
    ``nnUNetTrainerE3nnShells``, ``nnUNetTrainerE3nnRotDA`` under ``nnUNetTrainerE3nn``'s mixin)."""
    trainer = _trainer(tmp_path, monkeypatch, cls=cls)
    rotation, dummy_2d, crop, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert not isinstance(rotation, OffGridRotationSampler)
    assert np.allclose(rotation, (-angle, angle))
    pipeline = trainer.get_training_transforms((24, 24, 24), rotation, None, mirror_axes, dummy_2d)
    spatial = [t for t in pipeline.transforms if isinstance(t, SpatialTransform)]
    assert len(spatial) == 1 and spatial[0].p_rotation == 0.2, "nnU-Net's probability, untouched"


class _StockOffGridNearest(_StockOffGrid):
    rotation_mode_seg = "nearest"


class _StockOffGridBadLabels(_StockOffGrid):
    rotation_mode_seg = "cubic"


def test_rotation_mode_seg_sets_how_the_spatial_transform_resamples_labels(tmp_path, monkeypatch):
    """``None`` keeps nnU-Net's ``bilinear``; ``"nearest"`` reaches the ``SpatialTransform``, which then
    rotates a label map without new values; an unknown mode is named."""
    for cls, expected in ((_StockOffGrid, "bilinear"), (_StockOffGridNearest, "nearest")):
        trainer = _trainer(tmp_path, monkeypatch, cls=cls)
        rotation, dummy_2d, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        pipeline = trainer.get_training_transforms((24, 24, 24), rotation, None, mirror_axes, dummy_2d)
        (spatial,) = [t for t in pipeline.transforms if isinstance(t, SpatialTransform)]
        assert spatial.mode_seg == expected
    spatial.p_rotation, spatial.p_scaling = 1.0, 0.0
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 3, (1, 24, 24, 24)).astype(np.int16))
    np.random.seed(1)
    out = spatial(image=torch.zeros(1, 24, 24, 24), segmentation=labels)["segmentation"]
    assert set(np.unique(out.numpy())) <= {-1, 0, 1, 2} and not torch.equal(out, labels), "rotated, labels kept"
    trainer = _trainer(tmp_path, monkeypatch, cls=_StockOffGridBadLabels)
    rotation, dummy_2d, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    with pytest.raises(ValueError, match="rotation_mode_seg.*'cubic'"):
        trainer.get_training_transforms((24, 24, 24), rotation, None, mirror_axes, dummy_2d)


class _StockOffGridCubic(_StockOffGrid):
    rotation_mode_image = "cubic"


class _StockOffGridBadImages(_StockOffGrid):
    rotation_mode_image = "quintic"


def test_rotation_mode_image_cubic_swaps_in_the_spline_transform_with_nnunets_settings(tmp_path, monkeypatch):
    """``"cubic"`` replaces nnU-Net's ``SpatialTransform`` by the cubic-spline one in place, with the same
    sampler, probabilities and patch; ``None`` keeps nnU-Net's; an unknown mode is named."""
    from nnunet_equivariant.training.spline_resampling import CubicSplineSpatialTransform

    pipelines = {}
    for cls in (_StockOffGrid, _StockOffGridCubic):
        trainer = _trainer(tmp_path, monkeypatch, cls=cls)
        rotation, dummy_2d, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        pipelines[cls] = trainer.get_training_transforms((24, 24, 24), rotation, None, mirror_axes, dummy_2d)
    plain, cubic = ([t for t in pipelines[c].transforms if isinstance(t, SpatialTransform)]
                    for c in (_StockOffGrid, _StockOffGridCubic))
    assert type(plain[0]) is SpatialTransform and len(cubic) == 1 and type(cubic[0]) is CubicSplineSpatialTransform
    assert [type(t) for t in pipelines[_StockOffGrid].transforms].index(SpatialTransform) == \
        [type(t) for t in pipelines[_StockOffGridCubic].transforms].index(CubicSplineSpatialTransform)
    assert isinstance(cubic[0].rotation, OffGridRotationSampler)
    assert (cubic[0].p_rotation, cubic[0].p_scaling, tuple(cubic[0].patch_size)) == \
        (plain[0].p_rotation, plain[0].p_scaling, tuple(plain[0].patch_size))
    trainer = _trainer(tmp_path, monkeypatch, cls=_StockOffGridBadImages)
    rotation, dummy_2d, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    with pytest.raises(ValueError, match="rotation_mode_image.*'quintic'"):
        trainer.get_training_transforms((24, 24, 24), rotation, None, mirror_axes, dummy_2d)
