"""The rotation baselines' loaded crop holds every patch nnU-Net's own SpatialTransform can sample.

The test runs nnU-Net's real training transform (``nnUNetTrainer.get_training_transforms``: its
SpatialTransform, segmentation padded with -1, image with 0) on a crop of the size the trainer
configures, forcing the worst rotations and the largest zoom-out, and checks that no padding enters.
"""
import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from scipy.optimize import minimize
from scipy.spatial.transform import Rotation

from nnunet_equivariant.training.rotation import NNUNET_MAX_ZOOM_OUT, _rotations_3d, loaded_crop_size
from nnunet_equivariant.training.rotation_baselines import (
    nnUNetTrainerNoRot, nnUNetTrainerRot20, nnUNetTrainerRot180,
)

PATCH = (24, 32, 28)


def _make_trainer(cls, patch_size, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    architecture = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": {}, "_kw_requires_import": []}
    plans = {"dataset_name": "Dataset999_Crop", "plans_name": "nnUNetPlans", "continue_training": False,
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
             "image_reader_writer": "SimpleITKIO", "label_manager": "LabelManager",
             "configurations": {"3d_fullres": {"patch_size": list(patch_size), "spacing": [1.0, 1.0, 1.0],
                                               "data_identifier": "x", "architecture": architecture}}}
    dataset_json = {"labels": {"background": 0, "fg": 1}, "channel_names": {"0": "x"}}
    return cls(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))


def _spatial_transform(patch_size, rotation, dummy_2d=False):
    """nnU-Net's training pipeline up to and including its SpatialTransform (and the 2D/3D conversions)."""
    pipeline = nnUNetTrainer.get_training_transforms(patch_size, rotation, None, (0, 1, 2), dummy_2d)
    steps = pipeline.transforms
    i = next(k for k, t in enumerate(steps) if isinstance(t, SpatialTransform))
    return steps[i], steps[max(0, i - 1):i + 2] if dummy_2d else [steps[i]]


def _augment(patch_size, crop, rotation, angles, zoom, dummy_2d=False):
    """Run the pipeline on an all-foreground crop with the given angles and zoom; returns (image, seg)."""
    spatial, steps = _spatial_transform(patch_size, rotation, dummy_2d)
    assert max(spatial.scaling) == NNUNET_MAX_ZOOM_OUT, "our crop sizing uses nnU-Net's largest zoom-out"
    assert spatial.padding_value_seg == -1 and spatial.border_mode_seg == "constant"
    spatial.p_rotation, spatial.rotation = 1.0, (lambda *args, dim, **kwargs: angles[dim])
    spatial.p_scaling, spatial.scaling = 1.0, zoom
    data = {"image": torch.ones((1, *crop)), "segmentation": torch.ones((1, *crop), dtype=torch.int16)}
    for step in steps:
        data = step(**data)
    assert tuple(data["image"].shape[1:]) == tuple(patch_size)
    return data["image"], data["segmentation"]


def _corners(half):
    return np.array(np.meshgrid(*[(-h, h) for h in half], indexing="ij")).reshape(len(half), -1)


def _worst_angles(patch_size, max_angle):
    """Per axis, angles in [-max_angle, max_angle] that push a patch corner furthest along that axis."""
    half = (np.asarray(patch_size) - 1) / 2
    corners = _corners(half)
    worst = []
    for axis in range(3):
        if max_angle >= np.pi:  # rotate the longest diagonal onto the axis
            target = np.eye(3)[axis] * np.linalg.norm(half)
            rot, _ = Rotation.align_vectors([target], [half])
            angles = rot.as_euler("xyz")
            assert np.allclose(_rotations_3d(*angles[:, None])[0], rot.as_matrix()), "Euler convention matches"
        else:
            def extent(a):
                return -np.abs(_rotations_3d(*a[:, None])[0] @ corners)[axis].max()
            starts = [np.zeros(3)] + [np.array(s) * max_angle for s in np.ndindex(3, 3, 3)]
            best = min((minimize(extent, np.clip(s - max_angle, -max_angle, max_angle), method="L-BFGS-B",
                                 bounds=[(-max_angle, max_angle)] * 3) for s in starts), key=lambda r: r.fun)
            angles = best.x
        worst.append((angles, np.abs(_rotations_3d(*angles[:, None])[0] @ corners)[axis].max()))
    return worst


@pytest.mark.parametrize("trainer_class", [nnUNetTrainerNoRot, nnUNetTrainerRot20, nnUNetTrainerRot180])
def test_loaded_crop_holds_worst_case_patch(trainer_class, tmp_path, monkeypatch):
    trainer = _make_trainer(trainer_class, PATCH, tmp_path, monkeypatch)
    rotation, dummy_2d, crop, _ = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    max_angle = np.deg2rad(trainer_class.rotation_range_deg)
    assert rotation == pytest.approx((-max_angle, max_angle)) and not dummy_2d
    assert crop.tolist() == loaded_crop_size(PATCH, max_angle).tolist()

    rng = np.random.default_rng(0)
    cases = [(angles, NNUNET_MAX_ZOOM_OUT) for angles, _ in _worst_angles(PATCH, max_angle)]
    cases += [(rng.uniform(-max_angle, max_angle, 3), rng.uniform(0.7, NNUNET_MAX_ZOOM_OUT)) for _ in range(5)]
    for angles, zoom in cases:
        image, seg = _augment(PATCH, crop, rotation, angles, zoom)
        assert (seg != -1).all(), f"no segmentation padding enters the patch (angles {angles}, zoom {zoom})"
        assert image.min() > 1 - 1e-4, f"no image padding is interpolated into the patch (angles {angles})"

    # the crop is no larger than needed: the worst case reaches (nearly) its border
    for axis, (_, extent) in enumerate(_worst_angles(PATCH, max_angle)):
        slack = (crop[axis] - 1) / 2 - NNUNET_MAX_ZOOM_OUT * extent
        assert 0 <= slack < (1 if max_angle in (0, np.pi) else 4), f"crop axis {axis} is tight (slack {slack:.2f})"


def test_stock_crop_sizing_lets_padding_into_rotated_patches():
    max_angle = np.pi
    rotation = (-max_angle, max_angle)
    stock_crop = get_patch_size(PATCH, rotation, rotation, rotation, (0.85, 1.25))  # what nnUNetTrainer does
    (angles, _), *_ = _worst_angles(PATCH, max_angle)
    _, seg = _augment(PATCH, stock_crop, rotation, angles, 1.0)
    padded = float((seg == -1).float().mean())
    assert padded > 0.02, f"stock sizing pads {padded:.1%} of a rotated patch (expected several %)"
    image, seg = _augment(PATCH, loaded_crop_size(PATCH, max_angle), rotation, angles, 1.0)
    assert (seg != -1).all() and image.min() > 1 - 1e-4


def test_dummy_2d_crop_rotates_in_plane_only():
    patch = (8, 32, 28)
    crop = loaded_crop_size(patch, np.pi, dummy_2d=True)
    assert crop[0] == patch[0], "the out-of-plane axis is not rotated in nnU-Net's dummy-2D augmentation"
    half = (np.asarray(patch[1:]) - 1) / 2
    for axis in (0, 1):  # in-plane axes 1, 2: rotate the in-plane diagonal onto each
        angle = np.arctan2(half[1], half[0]) * (1 if axis == 0 else -1) + (0 if axis == 0 else np.pi / 2)
        image, seg = _augment(patch, crop, (-np.pi, np.pi), [angle, angle], NNUNET_MAX_ZOOM_OUT, dummy_2d=True)
        assert (seg != -1).all() and image.min() > 1 - 1e-4, "no padding in a dummy-2D rotated patch"


def test_bad_rotation_range_is_rejected(tmp_path, monkeypatch):
    class TooFar(nnUNetTrainerNoRot):
        rotation_range_deg = 200

    trainer = _make_trainer(TooFar, PATCH, tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="rotation_range_deg"):
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    with pytest.raises(ValueError, match="patch_size"):
        loaded_crop_size((0, 4, 4), 0.1)
