"""nnUNetTrainerE3nn through nnU-Net's own console commands on the shared synthetic dataset.

The trainer is found through the package's start-up hook in fresh subprocesses (only the test-only
``_tiny`` variant comes from ``tests/trainers``); the network is built from nnU-Net's default plans of
the dataset (4 stages, 32..256 features, 3^3 kernels at 1 mm), not from plans made for it.
"""
import json
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import DATASET_ID, assert_dice_recomputed, console_script

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
    assert "off-grid rotation augmentation: one axis, +-45 deg, p = 0.5" in log, "the default's rotations"
    assert "test-time mirroring axes reduced to (0,)" in log
    assert "Current learning rate: 0.005" in log and "betas" in checkpoint["optimizer_state"]["param_groups"][0], \
        "Adam at the paper's learning rate"
    summary = json.loads((model / "fold_0" / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}, "validation Dice is reported for both labels"

    out = tmp_path / "pred"
    ws.predict(TRAINER, out, "--save_probabilities")
    segmentations = {p.name: _read(p) for p in sorted(out.glob("*.nii.gz"))}
    assert list(segmentations) == ["RodsDiscs_100.nii.gz", "RodsDiscs_101.nii.gz"], "one segmentation per case"
    for name, seg in segmentations.items():
        probabilities = np.load(out / name.replace(".nii.gz", ".npz"))["probabilities"]
        assert probabilities.shape == (3, *seg.shape) and np.allclose(probabilities.sum(0), 1, atol=1e-3)
        assert np.array_equal(probabilities.argmax(0), seg), "the segmentation is the argmax of the probabilities"

    metrics = ws.evaluate(out, model)
    assert len(metrics["metric_per_case"]) == 2
    assert_dice_recomputed(metrics)  # nnU-Net's numbers are those of the files it was given


def _read(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_e3nn_reduced_mirroring_equals_full_mirroring_end_to_end(trainer_env, trained_model):
    """nnU-Net's predictor with the checkpoint's axes (2 passes) gives the 8-pass result.

    Exactly in float64: nnU-Net's own mirroring step (``_internal_maybe_mirror_and_predict``) on the trained
    network agrees to 1e-10. In float32 they agree only up to float32 rounding, which a trained network can
    amplify (max-type selections such as pooling switch between near-equal candidates): measured 6e-4
    relative on one trained tiny model, 1e-6 on another, with float64 exact on both, so it is rounding, not a
    broken symmetry. nnU-Net also accumulates tiles in float16, so the float32 sliding-window run is compared as
    segmentations."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    model = trained_model(TRAINER)
    torch.set_num_threads(2)
    predictor = nnUNetPredictor(use_gaussian=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=(0,))
    assert tuple(predictor.allowed_mirroring_axes) == (0,)

    def mirrored(x, axes):
        predictor.allowed_mirroring_axes = axes
        with torch.no_grad():
            return predictor._internal_maybe_mirror_and_predict(x)

    predictor.network.double().eval()
    x = torch.randn(1, 1, *predictor.configuration_manager.patch_size, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    reduced, full = mirrored(x, (0,)), mirrored(x, (0, 1, 2))
    assert torch.allclose(reduced, full, rtol=1e-10, atol=1e-10 * full.abs().max().item()), \
        f"float64: 2 mirror passes give the 8-pass logits (max difference {(reduced - full).abs().max():.2g})"

    predictor.network.float()
    image = str(trainer_env.dataset_raw / "imagesTs" / "RodsDiscs_100_0000.nii.gz")
    data, properties = predictor.plans_manager.image_reader_writer_class().read_images([image])
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data = preprocessor.run_case_npy(data, None, properties, predictor.plans_manager,
                                     predictor.configuration_manager, predictor.dataset_json)[0]
    data = torch.from_numpy(data).float()
    predictor.allowed_mirroring_axes = (0,)
    reduced = predictor.predict_sliding_window_return_logits(data).float()
    predictor.allowed_mirroring_axes = (0, 1, 2)
    full = predictor.predict_sliding_window_return_logits(data).float()
    # a switched selection moves the logits of the voxels behind it (up to 1.2e-2 of the largest logit
    # measured, docs in inference/export.py); the rest agree to rounding
    assert (reduced.argmax(0) != full.argmax(0)).float().mean() < 1e-2, "same segmentation from 2 and 8 passes"
    assert torch.quantile((reduced - full).abs().flatten(), 0.99) < 2e-3 * full.abs().max(), \
        "logits equal up to float32/float16 rounding outside switched selections"


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
