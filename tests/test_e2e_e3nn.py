"""nnUNetTrainerE3nn through nnU-Net's own console commands on the shared synthetic dataset.

The trainer is found through the package's start-up hook in fresh subprocesses (only the test-only
``_tiny`` variant comes from ``tests/trainers``); the network is built from nnU-Net's default plans of
the dataset (4 stages, 32..256 features, 3^3 kernels at 1 mm), not from plans made for it.
"""
import json
import subprocess

import pytest
import torch

from conftest import DATASET_ID, console_script

pytestmark = pytest.mark.e2e

TRAINER = "nnUNetTrainerE3nn_tiny"


def _logs(model):
    return "\n".join(p.read_text() for p in sorted((model / "fold_0").glob("training_log_*.txt")))


def test_e3nn_trainer_trains_predicts_and_evaluates(nnunet_workspace, trained_model, tmp_path):
    ws = nnunet_workspace
    model = trained_model(TRAINER)
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == TRAINER
    assert tuple(checkpoint["inference_allowed_mirroring_axes"]) == (0,), \
        "SO(3) network: test-time mirroring reduced to one axis (2 passes)"
    weights = checkpoint["network_weights"]
    assert "encoder.stages.0.0.conv.weight" in weights, "the checkpoint holds an E3nnUNet"
    assert not any("basis" in k for k in weights), "kernel bases are rebuilt, not stored"
    log = _logs(model)
    assert "rotation augmentation: +-0 deg" in log and "test-time mirroring axes reduced to (0,)" in log
    summary = json.loads((model / "fold_0" / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}, "validation Dice is reported for both labels"

    out = tmp_path / "pred"
    ws.run("nnUNetv2_predict", "-i", ws.dataset_raw / "imagesTs", "-o", out, "-d", DATASET_ID, "-c", "3d_fullres",
           "-tr", TRAINER, "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0", "--save_probabilities")
    cases = sorted(p.name for p in out.glob("*.nii.gz"))
    assert cases == ["RodsDiscs_100.nii.gz", "RodsDiscs_101.nii.gz"], "one segmentation per test case"
    probabilities = [p for p in out.glob("*.npz")]
    assert len(probabilities) == 2

    ws.run("nnUNetv2_evaluate_folder", ws.dataset_raw / "labelsTs", out,
           "-djfile", model / "dataset.json", "-pfile", model / "plans.json")
    metrics = json.loads((out / "summary.json").read_text())
    assert len(metrics["metric_per_case"]) == 2
    for label in ("1", "2"):
        dice = metrics["mean"][label]["Dice"]
        assert 0.0 <= dice <= 1.0 or dice != dice, f"Dice of label {label} is a valid number"


def test_e3nn_reduced_mirroring_equals_full_mirroring_end_to_end(nnunet_workspace, trained_model, monkeypatch):
    """nnU-Net's predictor with the checkpoint's axes (2 passes) gives the 8-pass logits.

    The predictor accumulates logits in float16, so the two agree to a few float16 ulps (the network
    itself agrees to float32 rounding; tests/test_e3nn_unet.py checks float64 to 1e-12)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    model = trained_model(TRAINER)
    monkeypatch.setenv("nnUNet_extTrainer", nnunet_workspace.env["nnUNet_extTrainer"])  # finds the _tiny trainer
    torch.set_num_threads(2)
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=(0,))
    assert tuple(predictor.allowed_mirroring_axes) == (0,)
    image = str(nnunet_workspace.dataset_raw / "imagesTs" / "RodsDiscs_100_0000.nii.gz")
    data, properties = predictor.plans_manager.image_reader_writer_class().read_images([image])
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data = preprocessor.run_case_npy(data, None, properties, predictor.plans_manager,
                                     predictor.configuration_manager, predictor.dataset_json)[0]
    data = torch.from_numpy(data).float()
    reduced = predictor.predict_sliding_window_return_logits(data).float()
    predictor.allowed_mirroring_axes = (0, 1, 2)
    full = predictor.predict_sliding_window_return_logits(data).float()
    float16_ulps = 4 * 2.0 ** -10
    assert torch.allclose(reduced, full, rtol=float16_ulps, atol=1e-3), \
        f"2 mirror passes give the 8-pass logits (max difference {(reduced - full).abs().max():.2g})"


def test_e3nn_training_resumes_with_c(nnunet_workspace, trained_model):
    """``--c`` loads the final checkpoint into a freshly built E3nnUNet (strictly) and continues from there:
    nothing is left to train, so it goes straight to the final validation."""
    model = trained_model(TRAINER)
    logs_before = set((model / "fold_0").glob("training_log_*.txt"))
    nnunet_workspace.run("nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", TRAINER, "-device", "cpu", "--c",
                         env={"nnUNet_n_proc_DA": "0"})
    new_logs = set((model / "fold_0").glob("training_log_*.txt")) - logs_before
    assert len(new_logs) == 1
    log = new_logs.pop().read_text()
    assert "Epoch 0" not in log and "Training done." in log, "resumed after the last epoch, no epoch rerun"
    assert "Mean Validation Dice" in log
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == 1


def test_e3nn_trainer_rejects_2d_configuration(nnunet_workspace):
    ws = nnunet_workspace
    cmd = [console_script("nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", "nnUNetTrainerE3nn", "-device", "cpu"]
    proc = subprocess.run(cmd, env=ws.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "nnUNetTrainerE3nn is a 3D trainer" in proc.stderr, proc.stderr[-3000:]
