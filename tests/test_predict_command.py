"""``nnunet-equivariant predict``: nnU-Net's command lines map to the typed arguments of ``inference.predict``
(the prediction itself runs in tests/test_e2e_inference.py), and bad input is refused by name."""
import os

import pytest

from nnunet_equivariant import cli
from nnunet_equivariant.commands import predict as command
from nnunet_equivariant.inference import predict as library


@pytest.fixture
def calls(monkeypatch):
    """The arguments ``predict`` is called with; nothing is predicted and the threads stay as they are."""
    seen = []
    monkeypatch.setattr(library, "predict", lambda *args, **kwargs: seen.append((args, kwargs)) or [])
    monkeypatch.setattr(library, "trained_model_folder",
                        lambda dataset, configuration, trainer, plans: f"results/{dataset}/{trainer}__{plans}__{configuration}")
    monkeypatch.setattr(command, "_set_threads", lambda device: seen.append(("threads", device)))
    return seen


def test_an_nnunet_predict_line_maps_to_the_library_arguments(calls):
    assert cli.main(["predict", "-i", "in", "-o", "out", "-d", "7", "-c", "3d_fullres", "-tr", "nnUNetTrainerE3nn",
                     "-p", "nnUNetPlansEquivariant", "-f", "0", "all", "-step_size", "0.25", "--disable_tta",
                     "--save_probabilities", "--continue_prediction", "-chk", "checkpoint_best.pth", "-npp", "0",
                     "-nps", "0", "-prev_stage_predictions", "prev", "-device", "cpu", "--disable_progress_bar",
                     "--not_on_device", "--verbose", "--rotation_tta", "grid", "--symmetric_tiling"]) == 0
    assert calls[0] == ("threads", "cpu"), "torch's threads are set as nnUNetv2_predict sets them"
    args, kwargs = calls[1]
    assert args == ("in", "out", "results/7/nnUNetTrainerE3nn__nnUNetPlansEquivariant__3d_fullres")
    assert kwargs == dict(folds=["0", "all"], rotation_tta="grid", symmetric_tiling=True, step_size=0.25,
                          use_mirroring=False,
                          checkpoint="checkpoint_best.pth", save_probabilities=True, overwrite=False,
                          num_processes_preprocessing=0, num_processes_segmentation_export=0,
                          previous_stage_predictions="prev", num_parts=1, part_id=0, device="cpu",
                          perform_everything_on_device=False, verbose=True, progress_bar=False)


def test_the_defaults_are_nnunets(calls, monkeypatch):
    monkeypatch.setenv("nnUNet_npp", "5")
    monkeypatch.delenv("nnUNet_nps", raising=False)
    assert cli.main(["predict", "-i", "in", "-o", "out", "-m", "model", "--c", "-num_parts", "3", "-part_id", "2"]) == 0
    args, kwargs = calls[1]
    assert args == ("in", "out", "model")
    assert kwargs["folds"] == (0, 1, 2, 3, 4) and kwargs["step_size"] == 0.5 and kwargs["device"] == "cuda"
    assert kwargs["num_processes_preprocessing"] == 5, "-npp defaults to $nnUNet_npp, as in nnUNetv2_predict"
    assert kwargs["num_processes_segmentation_export"] == 3
    assert kwargs["overwrite"] is False and (kwargs["num_parts"], kwargs["part_id"]) == (3, 2)
    assert kwargs["rotation_tta"] == "none" and kwargs["use_mirroring"] and kwargs["progress_bar"]
    assert kwargs["symmetric_tiling"] == "auto", "symmetric tiling where the network has a symmetry"


@pytest.mark.parametrize("value,expected", [("on", True), ("off", False), ("auto", "auto")])
def test_symmetric_tiling_takes_on_off_and_auto(calls, value, expected):
    assert cli.main(["predict", "-i", "in", "-o", "out", "-m", "model", "--symmetric-tiling", value]) == 0
    assert calls[1][1]["symmetric_tiling"] == expected


@pytest.mark.parametrize("argv,message", [
    (["-m", "model", "-d", "7"], "either -m"),
    (["-d", "7"], "-d DATASET -c CONFIGURATION"),
    ([], "-m MODEL_FOLDER"),
])
def test_the_model_is_either_a_folder_or_dataset_and_configuration(calls, capsys, argv, message):
    assert cli.main(["predict", "-i", "in", "-o", "out", *argv]) == 2
    assert message in capsys.readouterr().err
    assert calls == [], "nothing ran"


@pytest.mark.parametrize("kwargs,message", [
    ({"rotation_tta": "all"}, "rotation_tta must be one of"),
    ({"device": "gpu"}, "device must be one of"),
    ({"num_parts": 2, "part_id": 2}, "part_id must be in 0..num_parts - 1"),
    ({"num_parts": 2, "num_processes_preprocessing": 0, "num_processes_segmentation_export": 0}, "num_parts 2"),
])
def test_predict_refuses_bad_arguments_before_loading_anything(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        library.predict(tmp_path / "in", tmp_path / "out", tmp_path / "model", **kwargs)
    assert not os.path.exists(tmp_path / "out"), "nothing written"


def test_predict_names_a_folder_that_is_no_model(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'model'} is not a trained nnU-Net model folder"):
        library.predict(tmp_path / "in", tmp_path / "out", tmp_path / "model")
