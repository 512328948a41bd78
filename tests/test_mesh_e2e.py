"""The mesh round trip through nnU-Net's own commands: IntrA-like stand-ins -> nnU-Net dataset with the
official folds -> plan/preprocess -> a few training iterations -> predict with probabilities -> labels on
every vertex of the original mesh -> per-vertex metrics."""
import csv
import json
import shutil

import numpy as np
import pytest

from conftest import NnUNetWorkspace
from nnunet_equivariant.cli import main
from nnunet_equivariant.meshes.intra import read_ad
from nnunet_equivariant.meshes.mesh_io import read_labelled_mesh
from nnunet_equivariant.meshes.standins import write_intra_standin

pytestmark = pytest.mark.e2e

DATASET_ID = 963
FOLDER = f"Dataset{DATASET_ID}_IntrA"


def test_intra_round_trip_through_nnunet(tmp_path_factory):
    ws = NnUNetWorkspace(tmp_path_factory.mktemp("mesh_nnunet"))
    intra = write_intra_standin(ws.root / "IntrA", num_cases=5)
    assert main(["mesh", "to_nnunet", "intra", str(intra), "-d", str(DATASET_ID), "--raw", str(ws.raw),
                 "--preprocessed", str(ws.preprocessed), "--grid-size", "32"]) == 0
    ws.run("nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "3d_fullres", "-np", "1",
           "--verify_dataset_integrity")
    splits = json.loads((ws.preprocessed / FOLDER / "splits_final.json").read_text())
    assert [s["val"] for s in splits] == [["AN1"], ["AN2"], ["AN3"], ["AN4"], ["AN5"]], \
        "IntrA's official folds survive nnU-Net's preprocessing"

    ws.run("nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", "nnUNetTrainer_tiny", "-device", "cpu",
           env={"nnUNet_n_proc_DA": "0"})
    model = ws.results / FOLDER / "nnUNetTrainer_tiny__nnUNetPlans__3d_fullres" / "fold_0"
    assert sorted(p.name for p in (model / "validation").glob("*.nii.gz")) == ["AN1.nii.gz"], \
        "nnU-Net validated on fold 0 of the official split"

    images = ws.root / "fold0_val"
    images.mkdir()
    shutil.copy(ws.raw / FOLDER / "imagesTr" / "AN1_0000.nii.gz", images)
    pred = ws.root / "pred"
    ws.run("nnUNetv2_predict", "-i", images, "-o", pred, "-d", DATASET_ID, "-c", "3d_fullres",
           "-tr", "nnUNetTrainer_tiny", "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0",
           "--save_probabilities")
    assert (pred / "AN1.npz").is_file() and (pred / "AN1.pkl").is_file()

    out = ws.root / "on_mesh"
    assert main(["mesh", "from_nnunet", "-i", str(pred), "-m", str(ws.raw / FOLDER / "meshesTr"),
                 "-o", str(out)]) == 0
    points, _, ad_labels = read_ad(intra / "annotated" / "ad" / "AN1-_norm.ad")
    for suffix in (".ply", ".vtu"):
        vertices, faces, data = read_labelled_mesh(out / f"AN1{suffix}")
        np.testing.assert_allclose(vertices, points, atol=1e-6, err_msg="the original vertices, in .ad order")
        np.testing.assert_array_equal(data["true_label"], np.where(ad_labels == 2, 1, ad_labels))
        assert set(np.unique(data["label"])) <= {0, 1}
        np.testing.assert_allclose(data["p_vessel"] + data["p_aneurysm"] <= 1 + 1e-5, True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_meshes"] == 1
    # the scores are those of the labels written on the mesh (vessel 0, aneurysm 1), recomputed here
    predicted, truth = data["label"], data["true_label"]
    assert summary["accuracy"] == pytest.approx(np.mean(predicted == truth), abs=1e-12)
    assert set(summary["iou"]) == {"vessel", "aneurysm"} and set(summary["dsc"]) == {"vessel", "aneurysm"}
    for c, name in enumerate(("vessel", "aneurysm")):
        p, t = predicted == c, truth == c
        inter, union, total = (p & t).sum(), (p | t).sum(), p.sum() + t.sum()
        expected_iou = inter / union if union else float("nan")
        expected_dsc = 2 * inter / total if total else float("nan")
        for value, expected, what in ((summary["iou"][name], expected_iou, "IoU"),
                                      (summary["dsc"][name], expected_dsc, "DSC")):
            assert value == pytest.approx(expected, abs=1e-12, nan_ok=True), f"{what} of {name} on the written mesh"
    (row,) = csv.DictReader((out / "metrics.csv").open())
    assert row["case"] == "AN1" and float(row["accuracy"]) == pytest.approx(summary["accuracy"])
