"""nnUNetTrainerMirror (f123) through nnU-Net's own commands: train, predict with one pass, evaluate."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from conftest import assert_dice_recomputed


pytestmark = pytest.mark.e2e

TRAINER = "nnUNetTrainerMirror_tiny"


def test_mirror_trainer_trains_predicts_and_evaluates(trainer_env, trained_model, tmp_path):
    ws = trainer_env
    model = trained_model(TRAINER)
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == TRAINER
    assert checkpoint["inference_allowed_mirroring_axes"] is None, "f123: test-time mirroring is redundant"
    weights = checkpoint["network_weights"]
    assert weights["encoder.stages.0.0.convs.0.conv.weight"].shape[2:] == (2, 2, 2), \
        "the checkpoint holds the free half of each 3x3x3 kernel"
    summary = json.loads((model / "fold_0" / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}, "validation Dice is reported for both labels"

    out = tmp_path / "pred"
    proc = ws.predict(TRAINER, out, "--save_probabilities")
    cases = sorted(p.name for p in out.glob("*.nii.gz"))
    assert cases == ["RodsDiscs_100.nii.gz", "RodsDiscs_101.nii.gz"], proc.stdout[-2000:]
    probabilities = [p for p in out.glob("*.npz")]
    assert len(probabilities) == 2 and all(p.stat().st_size > 0 for p in probabilities)

    metrics = ws.evaluate(out, model)
    assert len(metrics["metric_per_case"]) == 2
    assert_dice_recomputed(metrics)

    # In process, on the same case: nnU-Net's predictor with the checkpoint's axes (1 pass) and with full
    # 8-pass mirroring give the same probabilities (nnU-Net accumulates tiles in float16: equal up to its
    # rounding) and segmentation, and the 1-pass segmentation is what nnUNetv2_predict wrote.
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=(0,))
    assert predictor.allowed_mirroring_axes is None
    image, properties = SimpleITKIO().read_images([str(ws.dataset_raw / "imagesTs" / "RodsDiscs_100_0000.nii.gz")])
    seg_one, prob_one = predictor.predict_single_npy_array(image, properties, save_or_return_probabilities=True)
    predictor.allowed_mirroring_axes = (0, 1, 2)
    seg_eight, prob_eight = predictor.predict_single_npy_array(image, properties, save_or_return_probabilities=True)
    np.testing.assert_allclose(prob_one, prob_eight, rtol=0, atol=2e-3)
    assert (seg_one != seg_eight).mean() < 1e-3
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "RodsDiscs_100.nii.gz")))
    assert np.array_equal(seg_one, written), "the command wrote the 1-pass segmentation"
