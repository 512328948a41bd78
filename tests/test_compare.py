"""``nnunet-equivariant compare`` end to end on the shared tiny models: ``--train`` trains only the missing
fold (and reports one that fails), the report holds every column for both trainers, its Dice numbers are
nnU-Net's ``summary.json`` and rotation_eval's CSV exactly, and the plots are PNGs.

Trains fold 1 of ``nnUNetTrainer_tiny`` in the shared workspace (other tests use fold 0 only); the training
of fold 1 of the steerable trainer is made to fail."""
import csv
import json

import pytest

from nnunet_equivariant import cli
from nnunet_equivariant.evaluation.rotation_eval import rotation_eval

pytestmark = pytest.mark.e2e

STOCK, E3NN = "nnUNetTrainer_tiny", "nnUNetTrainerE3nn_tiny"


@pytest.fixture
def nnunet_env(nnunet_workspace, monkeypatch):
    """The shared workspace's environment for this process (compare predicts here, trains in a child)."""
    for name, value in nnunet_workspace.env.items():
        if name.startswith("nnUNet_") or name in ("PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # augmentation in the training process, as trained_model does
    return nnunet_workspace


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_compare_trains_what_is_missing_and_reports_everything(nnunet_env, trained_model, tmp_path, monkeypatch):
    from nnunet_equivariant.evaluation import compare

    models = {STOCK: trained_model(STOCK), E3NN: trained_model(E3NN)}
    fold0 = {name: (m / "fold_0" / "checkpoint_final.pth").stat().st_mtime_ns for name, m in models.items()}
    real_train_fold, calls = compare._train_fold, []

    def train_fold(dataset, configuration, fold, trainer, plans, device, resume):
        calls.append((trainer, fold))
        if trainer == E3NN:
            return "simulated failure"
        return real_train_fold(dataset, configuration, fold, trainer, plans, device, resume)

    monkeypatch.setattr(compare, "_train_fold", train_fold)
    out = tmp_path / "compare"
    code = cli.main(["compare", "-d", "901", "-tr", STOCK, E3NN, "-f", "0", "1", "--train", "--angles", "0", "45",
                     "-o", str(out), "-device", "cpu", "--cost-repeats", "1"])
    assert code == 0

    # --train: only the missing folds, through nnU-Net's entry point; a failure is reported, the rest goes on
    assert calls == [(STOCK, 1), (E3NN, 1)], "fold 0 of both trainers exists and is not retrained"
    assert (models[STOCK] / "fold_1" / "checkpoint_final.pth").is_file(), "nnUNetv2_train trained fold 1"
    assert {n: (m / "fold_0" / "checkpoint_final.pth").stat().st_mtime_ns for n, m in models.items()} == fold0
    assert (models[STOCK] / "fold_1" / "validation" / "summary.json").is_file(), "nnU-Net's validation ran"
    report = (out / "report.md").read_text()
    assert f"{E3NN} fold 1 failed to train: simulated failure" in report
    for section in ("## Verdict", "## The networks compared", "## Accuracy", "## Pose robustness", "## Cost"):
        assert section in report

    rows = {r["model"]: r for r in _rows(out / "comparison.csv")}
    assert set(rows) == {STOCK, E3NN}
    assert (rows[STOCK]["folds"], rows[E3NN]["folds"], rows[E3NN]["failed_folds"]) == ("0 1", "0", "1")
    for name, row in rows.items():
        for column, value in row.items():
            if column == "failed_folds" or (name == E3NN and column.startswith("cv_dice_") and column.endswith("_std")):
                continue  # no failure for the stock trainer; no std over one fold
            if column == "ema_pseudo_dice_at_equal_time":
                continue  # checked against the checkpoints below: n/a where no epoch ended by then
            assert value not in ("", "nan"), f"{name}: column {column} is filled"
    assert (rows[STOCK]["tta_passes"], rows[E3NN]["tta_passes"]) == ("8", "2"), "SO(3): 2 mirror passes"
    assert (rows[STOCK]["network"], rows[E3NN]["network"]) == (
        "the plans' network", "E3nnSpec(irreps_ratio='12x0e+3x1e+1x2e', kernel_size=3, head='invariants')"), \
        "the report names each trainer's recipe"
    assert float(rows[STOCK]["train_step_s_ratio"]) == 1.0 and float(rows[E3NN]["parameters"]) > 0

    # accuracy: nnU-Net's summary.json of each fold exactly, and the mean over the folds
    per_fold = _rows(out / "accuracy_per_fold.csv")
    for name, folds in ((STOCK, (0, 1)), (E3NN, (0,))):
        for label in ("1", "2", "foreground"):
            values = []
            for fold in folds:
                summary = json.loads((models[name] / f"fold_{fold}" / "validation" / "summary.json").read_text())
                expected = summary["foreground_mean" if label == "foreground" else "mean"]
                expected = (expected if label == "foreground" else expected[label])["Dice"]
                ours = [float(r["dice"]) for r in per_fold if (r["model"], r["fold"], r["label"]) == (name, str(fold), label)]
                assert ours == [expected], f"{name} fold {fold} label {label}: nnU-Net's Dice"
                values.append(expected)
            assert float(rows[name][f"cv_dice_{label}"]) == sum(values) / len(values)

    # pose robustness: rotation_eval's rows exactly, each trainer with its trained folds
    ours = {tuple(r[k] for k in ("model", "plane", "angle_deg", "case", "label")): r
            for r in _rows(out / "rotation_eval.csv")}
    reference = {}
    for name, folds in ((STOCK, [0, 1]), (E3NN, [0])):
        result = rotation_eval(nnunet_env.dataset_raw, None, [models[name]], tmp_path / f"rot_{name}", folds=folds,
                               planes=["axial"], angles=[0, 45], device="cpu")
        reference.update({tuple(r[k] for k in ("model", "plane", "angle_deg", "case", "label")): r
                          for r in _rows(result.csv)})
    assert ours == reference, "compare's rotation rows are rotation_eval's"
    for name in (STOCK, E3NN):
        at_zero = [float(r["dice"]) for k, r in ours.items() if k[0] == name and k[2] == "0.0"]
        assert len(at_zero) == 4, "2 test cases x 2 labels at 0 deg"

    # learning per second: nnU-Net's logged EMA pseudo Dice against the summed epoch times, exactly
    import numpy as np
    import torch

    curves, logged = _rows(out / "learning_curves.csv"), {}
    for name, folds in ((STOCK, (0, 1)), (E3NN, (0,))):
        for fold in folds:
            logging = torch.load(models[name] / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu",
                                 weights_only=False)["logging"]
            seconds = np.cumsum(np.subtract(logging["epoch_end_timestamps"], logging["epoch_start_timestamps"]))
            logged[name, fold] = seconds, logging["ema_fg_dice"]
            ours = [r for r in curves if (r["model"], r["fold"]) == (name, str(fold))]
            assert [float(r["training_s"]) for r in ours] == pytest.approx(list(seconds))
            assert [float(r["ema_pseudo_dice"]) for r in ours] == pytest.approx(logging["ema_fg_dice"], nan_ok=True)
    equal = min(seconds[-1] for seconds, _ in logged.values())
    assert float(rows[STOCK]["equal_time_s"]) == pytest.approx(equal), "the shortest training of any fold"
    for name, folds in ((STOCK, (0, 1)), (E3NN, (0,))):
        # each fold's EMA at its last epoch that ended by then (the tiny models train one epoch: maybe none)
        at = [[d for t, d in zip(*logged[name, fold]) if t <= equal + 1e-6] for fold in folds]
        expected = [values[-1] for values in at if values]
        if expected:
            assert float(rows[name]["ema_pseudo_dice_at_equal_time"]) == pytest.approx(np.mean(expected))
        else:
            assert rows[name]["ema_pseudo_dice_at_equal_time"] == "nan"
    assert "## Learning per second of training" in report

    for png in ("dice_vs_angle.png", "dice_per_fold.png", "cost.png", "dice_vs_training_seconds.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, f"{png} is a PNG with content"
