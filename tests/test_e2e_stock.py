"""Stock nnU-Net through its own commands on the shared synthetic dataset: the baseline every
plugin trainer is compared with, and a check that the test workspace itself is sound."""
import json

import pytest


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
    for label in ("1", "2"):
        dice = metrics["mean"][label]["Dice"]
        assert 0.0 <= dice <= 1.0 or dice != dice, f"Dice of label {label} is a valid number"
