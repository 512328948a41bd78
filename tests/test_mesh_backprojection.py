"""Back to the mesh: nnU-Net probability files read in the right axis order and geometry, labelled meshes
written and read back, per-vertex metrics averaged per mesh."""
import csv
import pickle

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_equivariant.meshes.backprojection import (map_nnunet_predictions, read_nnunet_probabilities,
                                                      vertex_probabilities)
from nnunet_equivariant.meshes.mesh_io import read_labelled_mesh, write_labelled_mesh
from nnunet_equivariant.meshes.metrics import summarize, vertex_metrics
from nnunet_equivariant.meshes.nnunet_dataset import write_nnunet_dataset
from nnunet_equivariant.meshes.sources import acdc_source
from nnunet_equivariant.meshes.standins import write_acdc_standin

RNG = np.random.default_rng(0)


def write_nnunet_probabilities(path_stem, probabilities_xyz, spacing, origin, direction):
    """Write ``(C, x, y, z)`` probabilities the way nnUNetv2_predict --save_probabilities does."""
    np.savez_compressed(f"{path_stem}.npz", probabilities=probabilities_xyz.transpose(0, 3, 2, 1))
    with open(f"{path_stem}.pkl", "wb") as fh:
        pickle.dump({"sitk_stuff": {"spacing": tuple(spacing), "origin": tuple(origin),
                                    "direction": tuple(np.ravel(direction))}}, fh)


@pytest.mark.parametrize("improper", [False, True])
def test_probabilities_are_interpolated_in_physical_space(tmp_path, improper):
    """Channels that are linear functions of physical position are reproduced exactly at any point, for an
    anisotropic, oblique (and improper) image geometry."""
    q, _ = np.linalg.qr(RNG.normal(size=(3, 3)))
    direction = q @ np.diag([1, 1, -1 if improper else 1]) * np.sign(np.linalg.det(q))
    spacing, origin, shape = np.array([0.7, 1.1, 2.5]), np.array([3.0, -4.0, 10.0]), (20, 17, 9)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    world = origin + (idx * spacing) @ direction.T
    coeffs = RNG.normal(size=(3, 3))
    channels = np.moveaxis(world @ coeffs, -1, 0).astype(np.float32)
    write_nnunet_probabilities(tmp_path / "case", channels, spacing, origin, direction)
    probabilities, geometry = read_nnunet_probabilities(tmp_path / "case.npz")
    np.testing.assert_array_equal(probabilities, channels)
    u = RNG.uniform(0, 1, size=(200, 3)) * (np.array(shape) - 1)
    points = origin + (u * spacing) @ direction.T
    np.testing.assert_allclose(vertex_probabilities(probabilities, geometry, points), (points @ coeffs).T,
                               rtol=1e-4, atol=1e-4)


def test_missing_pkl_is_reported(tmp_path):
    np.savez_compressed(tmp_path / "case.npz", probabilities=np.zeros((2, 3, 3, 3)))
    with pytest.raises(FileNotFoundError, match="case.pkl does not exist.*--save_probabilities"):
        read_nnunet_probabilities(tmp_path / "case.npz")


def test_ground_truth_band_mapped_back_recovers_the_vertex_labels(tmp_path):
    """One-hot probabilities of the converted label maps, in nnU-Net's file layout, label the mesh vertices
    almost perfectly: the conversion and the back-projection agree on geometry and classes."""
    root = write_acdc_standin(tmp_path / "ACDC", num_patients=1)
    write_nnunet_dataset(acdc_source(root), tmp_path / "raw", 970, spacing=3.0, num_folds=1)
    folder = tmp_path / "raw" / "Dataset970_ACDCS"
    pred = tmp_path / "pred"
    pred.mkdir()
    for case in ("patient001_ED", "patient001_ES"):
        img = sitk.ReadImage(str(folder / "labelsTr" / f"{case}.nii.gz"))
        labels = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
        one_hot = np.stack([labels == c for c in range(4)]).astype(np.float32)
        write_nnunet_probabilities(pred / case, one_hot, img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    summary = map_nnunet_predictions(pred, folder / "meshesTr", tmp_path / "out")
    assert summary["num_meshes"] == 2
    assert summary["accuracy"] > 0.99, "labels survive conversion and back-projection"
    assert min(summary["iou"].values()) > 0.97
    vertices, faces, data = read_labelled_mesh(tmp_path / "out" / "patient001_ED.ply")
    v2, f2, data2 = read_labelled_mesh(tmp_path / "out" / "patient001_ED.vtu")
    np.testing.assert_allclose(vertices, v2)
    np.testing.assert_array_equal(faces, f2)
    for key in ("label", "true_label", "p_epicardium", "p_lv_endocardium", "p_rv_endocardium"):
        np.testing.assert_allclose(data[key], data2[key])
    assert np.mean(data["label"] == data["true_label"]) == pytest.approx(
        summary["per_case"]["patient001_ED"]["accuracy"])
    rows = list(csv.DictReader((tmp_path / "out" / "metrics.csv").open()))
    assert [r["case"] for r in rows] == ["patient001_ED", "patient001_ES"]
    assert set(rows[0]) == {"case", "accuracy", "iou_epicardium", "iou_lv_endocardium", "iou_rv_endocardium",
                            "dsc_epicardium", "dsc_lv_endocardium", "dsc_rv_endocardium"}
    with pytest.raises(FileExistsError):
        map_nnunet_predictions(pred, folder / "meshesTr", tmp_path / "out")


def test_mesh_files_keep_per_vertex_labels(tmp_path):
    v = RNG.normal(size=(30, 3))
    f = RNG.integers(0, 30, size=(40, 3))
    labels = RNG.integers(0, 3, size=30)
    for suffix in (".ply", ".vtu"):
        path = write_labelled_mesh(tmp_path / f"m{suffix}", v, f, {"label": labels, "p": v[:, 0]})
        rv, rf, data = read_labelled_mesh(path)
        np.testing.assert_allclose(rv, v)
        np.testing.assert_array_equal(rf, f)
        np.testing.assert_array_equal(data["label"], labels)
        np.testing.assert_allclose(data["p"], v[:, 0])
        with pytest.raises(FileExistsError):
            write_labelled_mesh(path, v, f, {"label": labels})
    with pytest.raises(ValueError, match="unsupported mesh format '.stl'"):
        write_labelled_mesh(tmp_path / "m.stl", v, f, {})


def test_vertex_metrics_and_intra_style_averaging():
    truth = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([0, 0, 1, 1, 1, 0])
    m = vertex_metrics(pred, truth, 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["iou"] == pytest.approx([2 / 4, 2 / 4]) and m["dsc"] == pytest.approx([4 / 6, 4 / 6])
    perfect = vertex_metrics(np.zeros(4, int), np.zeros(4, int), 2)
    assert perfect["iou"][0] == 1.0 and np.isnan(perfect["iou"][1]), "a class absent from both is undefined"
    s = summarize([m, perfect], ("vessel", "aneurysm"))
    assert s["iou"] == pytest.approx({"vessel": 0.75, "aneurysm": 0.5}), "per-class means over meshes, NaN left out"
    assert s["accuracy"] == pytest.approx((4 / 6 + 1) / 2)
    with pytest.raises(ValueError, match="outside"):
        vertex_metrics(np.array([0, 3]), np.array([0, 1]), 2)
