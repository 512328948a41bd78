"""``nnunet-equivariant predict --rotation_tta grid`` and ``nnunet-equivariant export`` on the shared tiny
models, through the console commands."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import DATASET_ID

from nnunet_equivariant.inference.export import load_exported
from nnunet_equivariant.networks.e3nn_spec import COMPACT_SPEC

pytestmark = pytest.mark.e2e


def _rotate_image(src, dst):
    """A 90-degree grid rotation of the voxel array (the header unchanged): a patient turned on the grid."""
    image = sitk.ReadImage(str(src))
    array = np.rot90(sitk.GetArrayFromImage(image), k=1, axes=(0, 2)).copy()
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(dst))


def test_predict_with_rotation_tta_makes_a_stock_network_rotation_invariant(nnunet_workspace, trained_model, tmp_path):
    """Stock nnU-Net with ``--rotation_tta grid --disable_tta`` (the 24 rotations, no flips, to halve the
    test's time): the prediction of a rotated case is the rotated prediction.

    The 32^3 cases are one sliding-window tile, so the tiling commutes with the rotation. With
    ``--symmetric_tiling off`` (nnU-Net's tiling) the Gaussian tile weights are centred half a voxel off, so
    the rotated case sees other weights: ~1e-3 float16 rounding where the weight is large, but in the
    tile's corners (weights ~1e-9, float16 subnormals) probabilities differ by up to 0.1 (measured). The
    default (``auto``: symmetric tiling with rotation TTA) weights by the flip-averaged Gaussian, and the
    whole case rotates exactly, up to float16 rounding."""
    ws = nnunet_workspace
    trained_model("nnUNetTrainer_tiny")
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(ws.dataset_raw / "imagesTs" / "RodsDiscs_100_0000.nii.gz", images / "A_0000.nii.gz")
    _rotate_image(images / "A_0000.nii.gz", images / "B_0000.nii.gz")
    differences = {}
    for tiling in ("auto", "off"):
        out = tmp_path / f"pred_{tiling}"
        proc = ws.run("nnunet-equivariant", "predict", "-i", images, "-o", out, "-d", DATASET_ID, "-c", "3d_fullres",
                      "-tr", "nnUNetTrainer_tiny", "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0",
                      "--rotation_tta", "grid", "--disable_tta", "--disable_progress_bar", "--save_probabilities",
                      "--symmetric_tiling", tiling)
        assert "Running in non-multiprocessing mode" in proc.stdout, "-npp 0 -nps 0: sequential, as nnUNetv2_predict"
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{c}.nii.gz"))) for c in "AB")
        pa, pb = (np.load(out / f"{c}.npz")["probabilities"] for c in "AB")
        assert pa.shape == (3, 32, 32, 32)  # probabilities compared: whatever the barely trained model predicts
        differences[tiling] = np.abs(np.rot90(pa, k=1, axes=(1, 3)) - pb).max(0)
        changed = (np.rot90(a, k=1, axes=(0, 2)) != b).mean()
        assert changed < 0.01, f"the segmentation rotates with the input ({tiling}: {changed:.2%} changed)"
    centre = np.linalg.norm(np.indices(a.shape) - 15.5, axis=0) < 16
    assert differences["off"][centre].max() < 2e-3, "the probabilities rotate with the input (float16 accumulator)"
    assert differences["auto"].max() < 2e-3, "symmetric tiling: everywhere, the tile's corners too"


@pytest.mark.parametrize("trainer", ["nnUNetTrainerE3nn_tiny", "nnUNetTrainerMirror_tiny"])
def test_exported_network_runs_without_e3nn_and_matches_the_trained_one(trainer_env, trained_model, tmp_path,
                                                                       trainer):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_equivariant.inference.export import assemble_network
    from nnunet_equivariant.inference.rotation_tta import RotationTTAPredictor

    ws = trainer_env
    model = trained_model(trainer)
    exported = tmp_path / "net.pt2"
    proc = ws.run("nnunet-equivariant", "export", model, "-o", exported)
    assert "max |difference|" in proc.stdout
    with pytest.raises(AssertionError, match="exists"):
        ws.run("nnunet-equivariant", "export", model, "-o", exported)

    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=(0,))
    x = torch.stack([_preprocessed(predictor, image) for image in sorted((ws.dataset_raw / "imagesTs").glob("*"))])
    assert x.shape == (2, 1, *predictor.configuration_manager.patch_size), "the test cases, one patch each"
    tta = RotationTTAPredictor(rotation_tta="grid", device=torch.device("cpu"))
    tta.initialize_from_trained_model_folder(str(model), use_folds=(0,))
    assert len(tta.tta_transforms()) == {"nnUNetTrainerE3nn_tiny": 2, "nnUNetTrainerMirror_tiny": 6}[trainer], \
        "rotation TTA passes read from the trainer's symmetry (SO(3): 2, f123: 6 of 48)"
    with torch.no_grad():
        reference = predictor.network.eval()(x)
    torch.save(x, tmp_path / "x.pt")

    script = f"""
import sys
sys.modules["e3nn"] = None  # any import of e3nn (or of this package) fails
sys.modules["nnunet_equivariant"] = None
sys.modules["nnunetv2"] = None
import json, torch
extra = {{"nnunet_equivariant.json": ""}}
net = torch.export.load({str(exported)!r}, extra_files=extra).module()
torch.save(net(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r})
print(json.loads(extra["nnunet_equivariant.json"])["trainer_name"])
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         env={**ws.env, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith(trainer), "the metadata travels with the program"
    _, metadata = load_exported(exported)
    expected_spec = {"nnUNetTrainerE3nn_tiny": COMPACT_SPEC.to_dict(), "nnUNetTrainerMirror_tiny": None}[trainer]
    assert metadata["spec"] == expected_spec, "the export records the steerable network's recipe"
    y = torch.load(tmp_path / "y.pt")
    assert y.shape == reference.shape == (2, 3, *predictor.configuration_manager.patch_size)
    # float32 on the real cases: traced op order differs from eager, and norm max-pooling, discontinuous at
    # near-equal norms, can turn rounding into a switched selection that moves the logits behind it; so the
    # bulk of the logits is bounded (a quantile) and the class allowed a few switched voxels. Measured with
    # the seeded nnUNetTrainerE3nn_tiny: 99th percentile 3.8e-7 of the largest logit, max 1.1e-6, no voxel
    # changed its class; the bounds leave 25x for another CPU's rounding.
    difference = (y - reference).abs().flatten() / reference.abs().max()
    assert torch.quantile(difference, 0.99) < 1e-5, \
        f"99 % of the logits equal the eager network's to float32 rounding ({torch.quantile(difference, 0.99):.2g})"
    assert (y.argmax(1) != reference.argmax(1)).float().mean() < 1e-3, "the same segmentation"
    network64 = predictor.network.double()
    assembled64 = assemble_network(network64)
    with torch.no_grad():
        reference64, x64 = network64(x.double()), x.double()
        traced64 = torch.export.export(assembled64, (x64,)).module()(x64)
        for out, what in ((assembled64(x64), "the assembled kernels"), (traced64, "the traced program")):
            assert torch.allclose(out, reference64, rtol=0, atol=1e-10 * reference64.abs().max().item()), \
                f"float64: {what} give the trained network's logits exactly"


def _preprocessed(predictor, image) -> torch.Tensor:
    """A raw test case as nnU-Net's predictor feeds it to the network: ``(channels, x, y, z)`` float32."""
    data, properties = predictor.plans_manager.image_reader_writer_class().read_images([str(image)])
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data = preprocessor.run_case_npy(data, None, properties, predictor.plans_manager,
                                     predictor.configuration_manager, predictor.dataset_json)[0]
    return torch.from_numpy(data).float()


def _split_by_physical_side(merged: sitk.Image) -> tuple[np.ndarray, set]:
    """The laterality split of a merged rods-and-discs prediction, built from ITK's own index-to-point map
    (not from ``inference.laterality``): each connected rod component takes the side of its centroid's LPS
    ``x`` against the image centre's (``+x``: patient's left -> rod_left 1, else rod_right 2); disc 2 -> 3.
    Returns the expected labels and the sides seen."""
    from scipy import ndimage

    array = sitk.GetArrayFromImage(merged)
    expected = np.where(array == 2, 3, 0).astype(array.dtype)
    centre = merged.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in merged.GetSize()])
    components, n = ndimage.label(array == 1)
    sides = set()
    for index, component in enumerate(ndimage.find_objects(components), start=1):
        voxels = np.argwhere(components[component] == index) + [s.start for s in component]
        z, y, x = voxels.mean(0)
        left = merged.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))[0] >= centre[0]
        expected[components == index] = 1 if left else 2
        sides.add("left" if left else "right")
    return expected, sides


def test_predict_from_model_folder_splits_a_laterality_mode_model(nnunet_workspace, trained_model, tmp_path):
    """``-m MODEL_FOLDER`` (nnUNetv2_predict_from_modelfolder's flags) on a model whose dataset.json records a
    merge (here: the tiny model's 'rod' stands for left and right rods): the written segmentations are
    nnU-Net's own prediction of the model with every rod relabelled by the side of the patient it lies on
    (expected labels built from ITK's physical coordinates, compared voxel by voxel; the seeded tiny model
    predicts rods on both sides), and a rerun with ``--c`` (nothing left to predict) splits nothing again."""
    ws = nnunet_workspace
    trained = trained_model("nnUNetTrainer_tiny")
    model = tmp_path / "model"
    shutil.copytree(trained, model)
    dataset_json = json.loads((model / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, "rod": 1, "disc": 2}
    record = {"labels": {"background": 0, "rod_left": 1, "rod_right": 2, "disc": 3},
              "pairs": {"rod": {"left": 1, "right": 2}}}
    (model / "dataset.json").write_text(json.dumps({**dataset_json, "laterality": record}))
    # nnUNetv2_predict_from_modelfolder has no sequential mode: one worker each (-npp 1 -nps 1)
    flags = ["-i", ws.dataset_raw / "imagesTs", "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1",
             "--disable_progress_bar"]
    plain = tmp_path / "plain"
    ws.run("nnUNetv2_predict_from_modelfolder", *flags, "-o", plain, "-m", trained)
    out = tmp_path / "pred"
    args = ["nnunet-equivariant", "predict", *flags, "-o", out, "-m", model]
    proc = ws.run(*args)
    cases = sorted(p.name for p in plain.glob("*.nii.gz"))
    assert cases and sorted(p.name for p in out.glob("*.nii.gz")) == cases
    assert f"laterality mode: {len(cases)} predictions split into left/right labels" in proc.stdout
    seen = set()
    for case in cases:
        expected, sides = _split_by_physical_side(sitk.ReadImage(str(plain / case)))
        seen |= sides
        split = sitk.GetArrayFromImage(sitk.ReadImage(str(out / case)))
        np.testing.assert_array_equal(split, expected, err_msg=f"{case}: nnU-Net's prediction, rods split by side")
    assert seen == {"left", "right"}, "the prediction has rods on both sides of the patient"
    proc = ws.run(*args, "--continue_prediction")
    assert "laterality mode: 0 predictions" in proc.stdout, "--c: nothing predicted, nothing split twice"
