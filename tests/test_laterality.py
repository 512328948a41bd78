"""Laterality: lateralised labels are detected, reflection-invariant trainers refuse them, and laterality
mode (merged labels, split by side in the patient's frame) restores the sides of a rotated patient."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from nnunet_equivariant.geometry import Geometry
from nnunet_equivariant.inference.laterality import (LateralityError, check_laterality, label_side, lateralised_labels,
                                                     left_right_data_axes, merge_plan, split_prediction_folder,
                                                     split_segmentation, write_merged_dataset)

LABELS = {"background": 0, "left_kidney": 1, "Kidney_R": 2, "spine": 3}
# (label, LPS centre in mm, radius): +x is the patient's left
ORGANS = [(1, (30.0, 5.0, 0.0), 12.0), (2, (-30.0, 5.0, 0.0), 12.0), (3, (0.0, -25.0, 0.0), 9.0)]


def _patient(rotation: np.ndarray, size=(48, 40, 44), spacing=(2.0, 2.0, 2.5)) -> sitk.Image:
    """A labelled patient (two kidneys, a spine) sampled on a grid whose axes are ``rotation``'s columns,
    centred on the patient's midline, as an oblique or re-oriented acquisition stores it."""
    direction = np.asarray(rotation, dtype=float)
    half = (np.asarray(size) - 1) / 2 * np.asarray(spacing)
    origin = -direction @ half  # the image centre is the physical origin
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3)
    points = origin + (ijk * spacing) @ direction.T
    labels = np.zeros(len(points), dtype=np.uint8)
    for value, centre, radius in ORGANS:
        labels[np.linalg.norm(points - centre, axis=1) <= radius] = value
    image = sitk.GetImageFromArray(labels.reshape(size).transpose(2, 1, 0).copy())  # (z, y, x) array
    image.SetSpacing(spacing)
    image.SetOrigin(tuple(origin))
    image.SetDirection(tuple(direction.flatten()))
    return image


ROTATIONS = {
    "identity": np.eye(3),
    "axes_permuted_and_flipped": np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]]),  # stored in another order
    "oblique": Rotation.from_euler("zyx", [140, 25, -35], degrees=True).as_matrix(),
    "head_first_left_right_reversed": np.diag([-1.0, -1.0, 1.0]),  # a 180-degree turn about z
}


def test_label_names_that_name_a_side():
    assert label_side("left_kidney") == ("left", "kidney") and label_side("Kidney_R") == ("right", "kidney")
    assert label_side("l_hippocampus") == ("left", "hippocampus") and label_side("LeftLung") == ("left", "lung")
    assert label_side("lung upper lobe right") == ("right", "lung_upper_lobe")
    for name in ("liver", "lr_unit", "leftover", "spleen", "Lens", "aorta"):
        assert label_side(name) is None, name
    assert set(lateralised_labels(LABELS)) == {"left_kidney", "Kidney_R"}
    merged, lookup, pairs = merge_plan(LABELS)
    assert merged == {"background": 0, "kidney": 1, "spine": 2}
    assert lookup == {0: 0, 1: 1, 2: 1, 3: 2} and pairs == {"kidney": {"left": 1, "right": 2}}
    with pytest.raises(ValueError, match="no lateralised labels"):
        merge_plan({"background": 0, "liver": 1})


@pytest.mark.parametrize("name", ROTATIONS)
def test_split_by_side_restores_the_labels_of_a_rotated_patient(name):
    image = _patient(ROTATIONS[name])
    truth = sitk.GetArrayFromImage(image)
    assert {1, 2, 3} <= set(np.unique(truth).tolist())
    merged_labels, lookup, pairs = merge_plan(LABELS)
    merged = np.vectorize(lookup.get)(truth).astype(np.uint8)
    record = {"labels": LABELS, "pairs": pairs}
    split = split_segmentation(merged, Geometry.from_sitk(image), merged_labels, record)
    assert np.array_equal(split, truth), f"{name}: every kidney voxel gets its side back"
    if name != "identity":  # relabelling by array half (dcan-nn-unet's fix) fails once the patient is rotated
        half = np.where(np.arange(merged.shape[2]) >= merged.shape[2] / 2, 1, 2)[None, None, :]
        by_half = np.where(merged == 1, half, split)
        assert not np.array_equal(by_half, truth)


def test_reflection_invariant_networks_refuse_lateralised_labels():
    with pytest.raises(LateralityError, match="laterality_merge") as e:
        check_laterality("o3", LABELS, trainer_name="nnUNetTrainerE3nnO3")
    assert "Kidney_R" in str(e.value) and "nnUNetTrainerE3nn" in str(e.value), "names the labels and a way out"
    check_laterality("so3", LABELS)  # rotations only: a left kidney is not a rotated right one
    check_laterality("o3", {"background": 0, "kidney": 1})
    identity = [tuple(np.eye(3).flatten())]
    assert left_right_data_axes(identity) == {2}, "SimpleITK arrays are (z, y, x): LPS x is data axis 2"
    assert left_right_data_axes(identity, transpose_forward=(2, 0, 1)) == {0}
    check_laterality("f12", LABELS, identity)  # mirror axes 0, 1 are not left-right
    with pytest.raises(LateralityError, match="data axis \\[2\\]"):
        check_laterality("f3", LABELS, identity)
    permuted = [tuple(ROTATIONS["axes_permuted_and_flipped"].flatten())]
    check_laterality("f3", LABELS, permuted)
    with pytest.raises(LateralityError):
        check_laterality("f3", LABELS, None)  # orientation unknown: any mirror axis may be left-right


def test_merged_dataset_and_prediction_folder_round_trip(tmp_path):
    raw = tmp_path / "raw"
    src = raw / "Dataset950_Kidneys"
    for sub in ("imagesTr", "labelsTr"):
        (src / sub).mkdir(parents=True)
    truths = {}
    for i, name in enumerate(["oblique", "axes_permuted_and_flipped"]):
        seg = _patient(ROTATIONS[name])
        truths[f"K_{i:03d}"] = sitk.GetArrayFromImage(seg)
        image = sitk.Cast(seg, sitk.sitkFloat32)
        sitk.WriteImage(image, str(src / "imagesTr" / f"K_{i:03d}_0000.nii.gz"))
        sitk.WriteImage(seg, str(src / "labelsTr" / f"K_{i:03d}.nii.gz"))
    (src / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": 2,
                                                  "file_ending": ".nii.gz"}))
    target = write_merged_dataset(raw, 950, 951)
    assert target.name == "Dataset951_KidneysMerged"
    merged_json = json.loads((target / "dataset.json").read_text())
    assert merged_json["labels"] == {"background": 0, "kidney": 1, "spine": 2}
    assert merged_json["laterality"]["labels"] == LABELS
    with pytest.raises(FileExistsError):
        write_merged_dataset(raw, 950, 951)

    predictions = tmp_path / "pred"  # a perfect merged prediction, as nnU-Net writes it
    predictions.mkdir()
    for case in truths:
        seg = sitk.ReadImage(str(target / "labelsTr" / f"{case}.nii.gz"))
        assert set(np.unique(sitk.GetArrayFromImage(seg)).tolist()) == {0, 1, 2}
        sitk.WriteImage(seg, str(predictions / f"{case}.nii.gz"))
        one_hot = np.eye(3, dtype=np.float32)[sitk.GetArrayFromImage(seg)].transpose(3, 0, 1, 2)
        np.savez_compressed(predictions / f"{case}.npz", probabilities=one_hot)
    written = split_prediction_folder(predictions, merged_json)
    assert [p.name for p in written] == ["K_000.nii.gz", "K_001.nii.gz"]
    assert sorted(p.name for p in predictions.iterdir()) == ["K_000.nii.gz", "K_000.npz", "K_001.nii.gz",
                                                             "K_001.npz"], "no temporary file left"
    for case, truth in truths.items():
        seg = sitk.ReadImage(str(predictions / f"{case}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(seg), truth), "original labels, sides from the header"
        probabilities = np.load(predictions / f"{case}.npz")["probabilities"]
        assert probabilities.shape[0] == 4 and np.array_equal(probabilities.argmax(0), truth)


@pytest.mark.e2e
def test_trainers_check_labels_at_construction(nnunet_workspace, tmp_path, monkeypatch):
    """The real trainer classes, built as ``nnUNetv2_train`` builds them, on the shared dataset's plans with
    its labels renamed left/right (the preprocessed cases' headers are axis-aligned: data axis 2 is x)."""
    import torch

    from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn, nnUNetTrainerE3nnO3
    from nnunet_equivariant.training.mirror import nnUNetTrainerMirror, nnUNetTrainerMirror_f12

    monkeypatch.setenv("nnUNet_preprocessed", str(nnunet_workspace.preprocessed))
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    folder = nnunet_workspace.preprocessed / "Dataset901_RodsDiscs"
    dataset_json = {**json.loads((folder / "dataset.json").read_text()),
                    "labels": {"background": 0, "rod_left": 1, "rod_right": 2}}

    def build(trainer):
        plans = {**json.loads((folder / "nnUNetPlans.json").read_text()), "continue_training": False}
        return trainer(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))

    for trainer in (nnUNetTrainerE3nn, nnUNetTrainerMirror_f12):
        build(trainer)  # SO(3); mirror axes 0 and 1 are not left-right
    for trainer, reason in ((nnUNetTrainerE3nnO3, "reflections"), (nnUNetTrainerMirror, "data axis \\[2\\]")):
        with pytest.raises(LateralityError, match=f"{trainer.__name__} cannot tell left from right: .*{reason}"):
            build(trainer)
    dataset_json["labels"] = {"background": 0, "rod": 1, "disc": 2}  # laterality mode: merged labels
    build(nnUNetTrainerE3nnO3)
