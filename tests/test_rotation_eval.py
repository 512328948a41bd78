"""rotation_eval on tiny trained models: 0 deg is nnUNetv2_predict + nnUNetv2_evaluate_folder exactly, an
exactly equivariant network (in float64) predicts the same voxels under 90-degree rotations, and the reports
are written."""
import csv
import math

import pytest

from nnunet_equivariant.evaluation.rotation_eval import rotation_eval

pytestmark = pytest.mark.e2e


def _dice_table(result):
    return {(r["model"], r["plane"], r["angle_deg"], r["case"], r["label"]): r["dice"] for r in result.rows}


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_zero_degrees_reproduces_predict_and_evaluate(trainer_env, trained_model, tmp_path):
    ws = trainer_env
    model = trained_model("nnUNetTrainer_tiny")
    predicted = tmp_path / "pred"
    ws.predict("nnUNetTrainer_tiny", predicted)
    stock = ws.evaluate(predicted, model)

    result = rotation_eval(ws.dataset_raw, None, [model], tmp_path / "eval", folds=[0],
                           planes=["axial", "sagittal"], angles=[0, 30, 90], device="cpu")
    dice = _dice_table(result)
    for per_case in stock["metric_per_case"]:
        case = per_case["reference_file"].rsplit("/", 1)[-1].removesuffix(".nii.gz")
        for label, metrics in per_case["metrics"].items():
            for plane in ("axial", "sagittal"):
                ours = dice[("nnUNetTrainer_tiny", plane, 0.0, case, label)]
                assert _same(ours, metrics["Dice"]), f"0 deg Dice of {case} label {label} equals nnU-Net's"

    rows = list(csv.DictReader(open(result.csv)))
    assert len(rows) == 1 * 2 * 3 * 2 * 2, "one CSV row per model, plane, angle, case and label"
    fov = {(r["plane"], r["angle_deg"]): int(r["fov_voxels"]) for r in rows}
    assert fov[("axial", "0.0")] == fov[("axial", "90.0")] == 32 ** 3, "a cube rotated by 90 deg stays in view"
    assert fov[("axial", "30.0")] < 32 ** 3, "corners rotated in from outside the FOV do not count"
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result.plot.stat().st_size > 10_000
    summary = result.summary.read_text()
    assert "nnUNetTrainer_tiny" in summary and "## axial: mean foreground Dice" in summary
    for label in ("1", "2"):
        mean_at_0 = [r["dice"] for r in result.rows if r["angle_deg"] == 0 and r["plane"] == "axial"
                     and r["label"] == label]
        assert _same(sum(mean_at_0) / len(mean_at_0), stock["mean"][label]["Dice"]), "mean Dice equals nnU-Net's"


def _float64_predictors(monkeypatch):
    """rotation_eval with every network in float64 behind nnU-Net's sliding window: the network's input is
    cast up and its logits back to float32 (nnU-Net accumulates them in float16, elementwise, which commutes
    with permuting voxels)."""
    from nnunet_equivariant.evaluation import rotation_eval as module

    load = module.load_predictor

    def load_float64(*args, **kwargs):
        predictor = load(*args, **kwargs)
        network = predictor.network.double()  # nnU-Net loads the fold's float32 weights into it, cast exactly
        network.register_forward_pre_hook(lambda module, args: tuple(a.double() for a in args))
        network.register_forward_hook(lambda module, args, output: output.float())
        return predictor

    monkeypatch.setattr(module, "load_predictor", load_float64)


def test_equivariant_network_keeps_dice_under_90_degree_rotations(trainer_env, trained_model, tmp_path,
                                                                  monkeypatch):
    """The steerable network is exactly equivariant on the grid's rotations; image size == patch size, so a
    90-degree rotation permutes voxels, and in float64 not one voxel of the seeded tiny model's prediction
    changes. Uniform window weights: nnU-Net's float16 Gaussian, centred half a voxel off for even patches, is
    itself not rotation-symmetric. (nnU-Net's float32 z-score of the rotated image can differ in the last bit,
    2.4e-7 measured for the axial plane: the float64 network sees that, and no voxel flips for it.)"""
    equivariant = ["nnUNetTrainerE3nn_tiny"]
    models = [trained_model(name) for name in [*equivariant, "nnUNetTrainer_tiny"]]
    _float64_predictors(monkeypatch)
    result = rotation_eval(trainer_env.dataset_raw, None, models, tmp_path / "eval", folds=[0],
                           planes=["axial", "coronal", "sagittal"], angles=[0, 90], device="cpu",
                           use_gaussian=False)
    counts = {(r["model"], r["plane"], r["angle_deg"], r["case"], r["label"]): (r["tp"], r["fp"], r["fn"])
              for r in result.rows}
    assert len(counts) == 2 * 3 * 2 * 2 * 2
    changed = {}
    for (model, plane, angle, case, label), (tp, fp, fn) in counts.items():
        at_zero = counts[(model, plane, 0.0, case, label)]
        changed[model] = changed.get(model, 0) + sum(abs(a - b) for a, b in zip((tp, fp, fn), at_zero))
        if model in equivariant:
            assert tp + fp > 0, f"{model} predicts label {label} in {case} ({plane} {angle:g} deg): a real test"
    for model in equivariant:
        assert changed[model] == 0, f"{model}: not one voxel's class changes under 90-degree rotations"
    assert changed["nnUNetTrainer_tiny"] > 0, "the check can fail: a stock network's prediction rotates badly"
