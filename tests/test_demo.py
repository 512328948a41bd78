"""``nnunet-equivariant demo --quick`` end to end in a fresh process: dataset, plans, two trained models,
and compare's report, all under the output folder."""
import csv
import json
import math

import pytest

pytestmark = pytest.mark.e2e


def test_demo_quick(nnunet_workspace, tmp_path):
    out = tmp_path / "demo"
    elsewhere = {name: str(tmp_path / "not_used") for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    proc = nnunet_workspace.run("nnunet-equivariant", "demo", "--quick", "--output", out, "-device", "cpu",
                                env=elsewhere)
    assert not (tmp_path / "not_used").exists(), "the demo sets nnU-Net's folders itself, under its output"
    assert str(out / "compare" / "report.md") in proc.stdout, "the demo says where its report is"
    results = out / "nnUNet_results" / "Dataset990_RodsDiscsDemo"
    for trainer in ("nnUNetTrainerE3nn", "nnUNetTrainerNoRot"):
        model = results / f"{trainer}__nnUNetPlansEquivariant__3d_fullres"
        assert (model / "fold_0" / "checkpoint_final.pth").is_file(), f"{trainer} was trained"
    plans = json.loads((out / "nnUNet_preprocessed" / "Dataset990_RodsDiscsDemo" / "nnUNetPlansEquivariant.json")
                       .read_text())
    assert plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["kernel_sizes"][0] == [3, 3, 3], \
        "isotropic plans with the default steerable network's kernels (nnU-Net's own size)"
    rows = list(csv.DictReader(open(out / "compare" / "rotation_eval.csv")))
    assert {r["model"] for r in rows} == {"nnUNetTrainerE3nn", "nnUNetTrainerNoRot"}
    assert {float(r["angle_deg"]) for r in rows} == {0.0, 45.0, 90.0}
    assert len(rows) == 2 * 3 * 2 * 2, "models x angles x test cases x labels"
    report = (out / "compare" / "report.md").read_text()
    assert "nnUNetTrainerE3nn" in report and "## Cost" in report
    table = {r["model"]: r for r in csv.DictReader(open(out / "compare" / "comparison.csv"))}
    for trainer in ("nnUNetTrainerE3nn", "nnUNetTrainerNoRot"):
        summary = results / f"{trainer}__nnUNetPlansEquivariant__3d_fullres" / "fold_0" / "validation" / "summary.json"
        assert summary.is_file(), "nnU-Net's validation ran after training"
        summary = json.loads(summary.read_text())
        # a label absent from the validation case and from the prediction has Dice NaN in nnU-Net's summary
        # (and then so has the foreground mean): the table shows nnU-Net's numbers, NaN included
        expected = {f"cv_dice_{k}": v["Dice"] for k, v in summary["mean"].items()}
        expected["cv_dice_foreground"] = summary["foreground_mean"]["Dice"]
        assert {k: float(table[trainer][k]) for k in expected} == pytest.approx(expected, nan_ok=True)
        assert any(not math.isnan(v) for v in expected.values())
    with pytest.raises(AssertionError, match="--overwrite"):  # a second run keeps the first one's results
        nnunet_workspace.run("nnunet-equivariant", "demo", "--quick", "--output", out, "-device", "cpu")
