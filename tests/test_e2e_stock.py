"""Stock nnU-Net through its own commands on the shared synthetic dataset: the baseline every
plugin trainer is compared with, and a check that the test workspace itself is sound."""
import json

import pytest
import torch

from conftest import DATASET_ID, assert_dice_recomputed


pytestmark = pytest.mark.e2e


def test_stock_trainer_trains_predicts_and_evaluates(nnunet_workspace, trained_model, tmp_path):
    ws = nnunet_workspace
    model = trained_model("nnUNetTrainer_tiny")
    assert (model / "fold_0" / "checkpoint_final.pth").is_file(), "training wrote a final checkpoint"
    summary = json.loads((model / "fold_0" / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}, "validation Dice is reported for both labels"

    out = tmp_path / "pred"
    ws.predict("nnUNetTrainer_tiny", out)
    cases = sorted(p.name for p in out.glob("*.nii.gz"))
    assert cases == ["RodsDiscs_100.nii.gz", "RodsDiscs_101.nii.gz"], "one segmentation per test case"

    metrics = ws.evaluate(out, model)
    assert len(metrics["metric_per_case"]) == 2
    assert_dice_recomputed(metrics)


def test_tiny_training_is_deterministic(nnunet_workspace, trained_model, tmp_path):
    """The seeded test trainers (tests/tiny_trainers.py) train the same model twice: the weights are equal bit
    for bit (measured on this CPU for nnUNetTrainer_tiny and nnUNetTrainerE3nn_tiny), which is
    what lets the end-to-end tests use exact checks."""
    ws = nnunet_workspace
    first = trained_model("nnUNetTrainer_tiny") / "fold_0" / "checkpoint_final.pth"
    again = tmp_path / "results"
    ws.run("nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", "nnUNetTrainer_tiny", "-device", "cpu",
           env={"nnUNet_results": str(again), "nnUNet_n_proc_DA": "0"})
    second = next(again.rglob("checkpoint_final.pth"))
    a, b = (torch.load(f, map_location="cpu", weights_only=False)["network_weights"] for f in (first, second))
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ between two seeded trainings: {different[:5]}"
