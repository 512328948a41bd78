"""nnU-Net's multi-fold workflow with our trainers, through its own console commands.

- Five folds of a steerable and a stock trainer, ``nnUNetv2_find_best_configuration`` over both (each model's
  cross-validation, their ensemble, postprocessing), ``nnUNetv2_ensemble`` and ``nnUNetv2_apply_postprocessing``.
- ``nnUNetv2_predict -f 0 1``: nnU-Net's predictor loads each fold's weights into ONE network with
  ``load_state_dict`` and averages the folds' logits, so the eval kernel caches of the steerable and the
  mirror-symmetric convolutions must follow the swap. Checked against single-fold predictions.
- Predicting fold 0's validation cases with ``nnUNetv2_predict`` reproduces ``validation/summary.json``
  (the checkpoint carries the trainer's test-time mirroring axes, so both use the same passes).

Cost: tiny trainers (2 iterations); folds 1-4 of the steerable and the stock trainer and fold 1 of the
mirror trainer are trained here, fold 0 is shared with the other end-to-end tests. Measured alone on a
2-core machine shared with other jobs (load ~20): 55 min wall, 17 min CPU, about 3/4 of it this file's own
(9 trainings ~25 min, 9 predictions ~13 min, find_best + ensemble + postprocessing ~2 min, all wall). With
``FOLDS = (0, 1)`` (``find_best_configuration -f 0 1``) six of the trainings go.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import DATASET_ID, DATASET_NAME

pytestmark = pytest.mark.e2e

STEERABLE, MIRROR, STOCK = "nnUNetTrainerE3nn_tiny", "nnUNetTrainerMirror_tiny", "nnUNetTrainer_tiny"
FOLDS = (0, 1, 2, 3, 4)
MODEL_ID = "{}__nnUNetPlans__3d_fullres"


@pytest.fixture(scope="module")
def five_fold_models(trained_model) -> dict[str, Path]:
    """The steerable and the stock tiny trainer trained on all five folds (validation probabilities kept)."""
    return {trainer: [trained_model(trainer, fold=f) for f in FOLDS][0] for trainer in (STEERABLE, STOCK)}


def _fold0_validation_cases(ws) -> list[str]:
    splits = json.loads((ws.preprocessed / DATASET_NAME / "splits_final.json").read_text())
    return sorted(splits[0]["val"])


@pytest.fixture(scope="module")
def fold_predictions(nnunet_workspace, trained_model, tmp_path_factory):
    """Factory: ``fold_predictions(trainer)`` runs ``nnUNetv2_predict`` (with ``--save_probabilities``) once per
    trainer with ``-f 0`` on fold 0's validation images and the test images, and with ``-f 1`` and ``-f 0 1``
    on the test images; returns ``{"0": folder, "1": folder, "0 1": folder}``."""
    ws = nnunet_workspace
    root = tmp_path_factory.mktemp("fold_predictions")
    inputs = root / "fold0_validation_and_test_images"
    cache: dict[str, dict[str, Path]] = {}

    def predict(trainer: str) -> dict[str, Path]:
        if trainer not in cache:
            for fold in (0, 1):
                trained_model(trainer, fold=fold)
            if not inputs.exists():  # the first training wrote splits_final.json
                inputs.mkdir()
                for case in _fold0_validation_cases(ws):
                    (inputs / f"{case}_0000.nii.gz").symlink_to(ws.dataset_raw / "imagesTr" / f"{case}_0000.nii.gz")
                for image in (ws.dataset_raw / "imagesTs").glob("*.nii.gz"):
                    (inputs / image.name).symlink_to(image)
            out = {}
            for folds, images in (("0", inputs), ("1", ws.dataset_raw / "imagesTs"),
                                  ("0 1", ws.dataset_raw / "imagesTs")):
                out[folds] = root / f"{trainer}_f{folds.replace(' ', '_')}"
                # nnUNet_def_n_proc caps the predictor's torch threads; at the CPU count it predicts with the
                # threads the trainer's final validation used, so float rounding is the same as there
                ws.run("nnUNetv2_predict", "-i", images, "-o", out[folds], "-d", DATASET_ID, "-c", "3d_fullres",
                       "-tr", trainer, "-f", *folds.split(), "-device", "cpu", "-npp", "0", "-nps", "0",
                       "--save_probabilities", env={"nnUNet_def_n_proc": str(multiprocessing.cpu_count())})
            cache[trainer] = out
        return cache[trainer]

    return predict


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _probabilities(folder: Path, case: str) -> np.ndarray:
    return np.load(folder / f"{case}.npz")["probabilities"]


def _test_cases(ws) -> list[str]:
    return sorted(p.name[:-len("_0000.nii.gz")] for p in (ws.dataset_raw / "imagesTs").glob("*_0000.nii.gz"))


def _centred_log(p: np.ndarray) -> np.ndarray:
    """Logits up to a per-voxel constant: ``log p - mean over classes`` (float64)."""
    assert (p > 0).all(), "probabilities of a softmax over float16 logits of a tiny model are positive"
    log_p = np.log(p.astype(np.float64))
    return log_p - log_p.mean(0, keepdims=True)


@pytest.mark.parametrize("trainer", [STEERABLE, MIRROR, STOCK])
def test_predict_with_two_folds_averages_the_folds_logits(nnunet_workspace, fold_predictions, trainer):
    """``-f 0 1`` = softmax of the mean of the two folds' logits (nnU-Net averages logits, not probabilities).

    From saved probabilities ``log p_f = z_f - logsumexp(z_f)``, so ``softmax(mean_f log p_f) = softmax(mean_f
    z_f)``: compared as centred log-probabilities, which agree up to the float16 rounding of the accumulated
    logits. If the eval kernel cache kept fold 0's kernels after ``load_state_dict`` the result would be fold 0's,
    which differs from the average far beyond that tolerance (asserted too). The stock trainer is the control."""
    out = fold_predictions(trainer)
    for case in _test_cases(nnunet_workspace):
        c0, c1, c01 = (_centred_log(_probabilities(out[f], case)) for f in ("0", "1", "0 1"))
        mean = (c0 + c1) / 2
        # one float16 rounding of z0 + z1 (<= 2^-11 relative), plus float32 softmax/log rounding
        tol = 2.0 ** -10 * max(np.abs(c0).max(), np.abs(c1).max()) + 1e-5
        error = np.abs(c01 - mean).max()
        assert error <= tol, f"{trainer} {case}: -f 0 1 is the mean of fold 0's and fold 1's logits " \
                             f"(max difference {error:.3g} > {tol:.3g})"
        assert np.abs(c0 - c1).max() > 20 * tol, "the folds' models differ, so a stale fold would be caught"
        assert np.abs(c01 - c0).max() > 10 * tol, f"{trainer}: -f 0 1 is not fold 0's prediction"
        seg01, probabilities01 = _read(out["0 1"] / f"{case}.nii.gz"), _probabilities(out["0 1"], case)
        assert np.array_equal(seg01, probabilities01.argmax(0)), "segmentation = argmax of its probabilities"


@pytest.mark.parametrize("trainer", [STEERABLE, MIRROR, STOCK])
def test_predicting_fold0_validation_cases_reproduces_the_validation_summary(nnunet_workspace, trained_model,
                                                                           fold_predictions, trainer):
    """``nnUNetv2_predict -f 0`` on fold 0's validation images (from nnUNet_raw, preprocessed again) gives the
    final validation's probabilities and segmentations voxel for voxel, hence the metrics of
    ``validation/summary.json``: the checkpoint stores the trainer's ``inference_allowed_mirroring_axes``
    (SO(3): (0,); f123 mirror: none, one pass; stock: all three), which both use."""
    import torch
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    ws = nnunet_workspace
    fold0 = trained_model(trainer, fold=0) / "fold_0"
    predicted = fold_predictions(trainer)["0"]
    summary = json.loads((fold0 / "validation" / "summary.json").read_text())
    per_case = {Path(c["prediction_file"]).name: c for c in summary["metric_per_case"]}
    cases = _fold0_validation_cases(ws)
    assert sorted(per_case) == [f"{c}.nii.gz" for c in cases], "the summary covers fold 0's validation cases"
    axes = torch.load(fold0 / "checkpoint_final.pth", map_location="cpu", weights_only=False)[
        "inference_allowed_mirroring_axes"]
    assert (axes if axes is None else tuple(axes)) == {STEERABLE: (0,), MIRROR: None, STOCK: (0, 1, 2)}[trainer]
    for name, entry in per_case.items():
        validation_seg = _read(fold0 / "validation" / name)
        assert np.array_equal(_read(predicted / name), validation_seg), \
            f"{trainer}: nnUNetv2_predict reproduces the validation segmentation of {name}"
        case = name[:-len(".nii.gz")]  # the same logits (mirror passes included): bit-identical when run here
        difference = np.abs(_probabilities(predicted, case) - _probabilities(fold0 / "validation", case)).max()
        assert difference <= 1e-5, \
            f"{trainer} {case}: validation probabilities reproduced (max difference {difference})"
        metrics = compute_metrics(str(ws.dataset_raw / "labelsTr" / name), str(predicted / name), SimpleITKIO(),
                                  [1, 2])["metrics"]
        for label in ("1", "2"):
            for key, value in entry["metrics"][label].items():
                recomputed = metrics[int(label)][key]
                assert value == recomputed or (np.isnan(value) and np.isnan(recomputed)), \
                    f"{trainer} {name} label {label} {key}: {recomputed} from the prediction, {value} in summary.json"


def test_find_best_configuration_ensemble_and_postprocessing(nnunet_workspace, five_fold_models, fold_predictions,
                                                             tmp_path):
    """``nnUNetv2_find_best_configuration`` over the steerable and the stock model (5 folds each): both models'
    cross-validation (every training case validated once), their ensemble (from the folds' validation
    probabilities), postprocessing for the best; then ``nnUNetv2_ensemble`` and ``nnUNetv2_apply_postprocessing``
    as its instructions say, on the two models' ``-f 0 1`` test predictions."""
    ws = nnunet_workspace
    ws.run("nnUNetv2_find_best_configuration", DATASET_ID, "-c", "3d_fullres", "-tr", STEERABLE, STOCK,
           "-f", *map(str, FOLDS), "-np", "1")
    results = ws.results / DATASET_NAME
    folds_tag = "_".join(map(str, FOLDS))
    splits = json.loads((ws.preprocessed / DATASET_NAME / "splits_final.json").read_text())
    validated = sorted(f"{case}.nii.gz" for f in FOLDS for case in splits[f]["val"])  # FOLDS = all: every case
    assert len(FOLDS) < 5 or validated == sorted(p.name for p in (ws.dataset_raw / "labelsTr").glob("*.nii.gz"))
    ensemble_id = f"ensemble___{MODEL_ID.format(STEERABLE)}___{MODEL_ID.format(STOCK)}___{folds_tag}"
    for source in [five_fold_models[t] / f"crossval_results_folds_{folds_tag}" for t in (STEERABLE, STOCK)] + \
            [results / "ensembles" / ensemble_id]:
        summary = json.loads((source / "summary.json").read_text())
        assert sorted(Path(c["prediction_file"]).name for c in summary["metric_per_case"]) == validated, \
            f"{source.name}: the folds' validation cases, each once (all training cases for five folds)"

    info = json.loads((results / "inference_information.json").read_text())
    assert set(info["all_results"]) == {MODEL_ID.format(STEERABLE), MODEL_ID.format(STOCK), ensemble_id}
    for source in [five_fold_models[t] / f"crossval_results_folds_{folds_tag}" for t in (STEERABLE, STOCK)] + \
            [results / "ensembles" / ensemble_id]:
        name = ensemble_id if source.parent.name == "ensembles" else source.parent.name
        summary = json.loads((source / "summary.json").read_text())
        assert info["all_results"][name] == summary["foreground_mean"]["Dice"], \
            f"{name}: the score nnU-Net chose by is its cross-validation summary's foreground Dice"
    best = info["best_model_or_ensemble"]
    chosen = {m["trainer"] for m in best["selected_model_or_models"]}
    assert chosen in ({STEERABLE}, {STOCK}, {STEERABLE, STOCK})
    instructions = (results / "inference_instructions.txt").read_text()
    assert all(f"-tr {t}" in instructions for t in chosen) and "nnUNetv2_apply_postprocessing" in instructions
    postprocessing_file = Path(best["postprocessing_file"])
    assert postprocessing_file.is_file()

    members = [fold_predictions(t)["0 1"] for t in (STEERABLE, STOCK)]
    ensemble, postprocessed = tmp_path / "ensemble", tmp_path / "postprocessed"
    ws.run("nnUNetv2_ensemble", "-i", *members, "-o", ensemble, "-np", "1", "--save_npz")
    ws.run("nnUNetv2_apply_postprocessing", "-i", ensemble, "-o", postprocessed, "-pp_pkl_file", postprocessing_file,
           "-np", "1", "-plans_json", best["some_plans_file"])
    functions, _ = pickle.loads(postprocessing_file.read_bytes())
    for case in _test_cases(ws):
        mean = (_probabilities(members[0], case) + _probabilities(members[1], case)) / 2
        assert np.allclose(_probabilities(ensemble, case), mean, atol=1e-6), "the ensemble averages probabilities"
        seg = _read(ensemble / f"{case}.nii.gz")
        assert np.array_equal(seg, mean.argmax(0)), "the ensemble's segmentation is the argmax of the mean"
        after = _read(postprocessed / f"{case}.nii.gz")
        assert ((after == seg) | (after == 0)).all(), "postprocessing only removes components (sets background)"
        if not functions:
            assert np.array_equal(after, seg), "no postprocessing chosen: segmentation unchanged"
    assert os.listdir(postprocessed), "postprocessed segmentations written"
