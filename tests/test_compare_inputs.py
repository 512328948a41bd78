"""compare refuses bad input with an error naming the value, folder or file, before any training or prediction."""
import json

import pytest
import torch

from nnunet_equivariant import cli
from nnunet_equivariant.evaluation import compare as module
from nnunet_equivariant.synthetic import write_rods_and_discs_dataset

DATASET = "Dataset902_RodsDiscs"
LABELS = {"background": 0, "rod": 1, "disc": 2}


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A raw dataset with test cases and an empty results folder, as nnU-Net's environment."""
    write_rods_and_discs_dataset(tmp_path / "raw", 902, num_train=1, num_test=2, shape=(12, 12, 12))
    for name in ("raw", "preprocessed", "results"):
        (tmp_path / name).mkdir(exist_ok=True)
        monkeypatch.setenv(f"nnUNet_{name}", str(tmp_path / name))

    def refuse(*args, **kwargs):
        raise AssertionError("training or prediction started before the input was checked")

    monkeypatch.setattr(module, "_train_missing", refuse)
    monkeypatch.setattr(module, "_rotation", refuse)
    return tmp_path / "results"


def _model(results, trainer="nnUNetTrainer", dataset=DATASET, labels=None, folds=(0,), configuration="3d_fullres"):
    """A model folder with small stand-in checkpoints that hold what compare reads before predicting."""
    folder = results / DATASET / f"{trainer}__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    dataset_json = {"channel_names": {"0": "synthetic"}, "labels": labels or LABELS, "file_ending": ".nii.gz",
                    "numTraining": 1}
    plans = {"dataset_name": dataset, "image_reader_writer": "SimpleITKIO", "configurations": {"3d_fullres": {}}}
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    (folder / "plans.json").write_text(json.dumps(plans))
    for f in folds:
        (folder / f"fold_{f}").mkdir()
        torch.save({"init_args": {"configuration": configuration, "plans": plans}, "logging": {}},
                   folder / f"fold_{f}" / "checkpoint_final.pth")
    return folder


def _run(tmp_path, trainers=("nnUNetTrainer", "nnUNetTrainerNoMirroring"), **kwargs):
    kwargs = {"folds": [0], **kwargs}
    return module.compare(902, trainers, tmp_path / "out", **kwargs)


def test_existing_output_folder(results, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.md").write_text("an earlier comparison")
    with pytest.raises(FileExistsError, match=f"{tmp_path / 'out'}.*--overwrite"):
        _run(tmp_path)
    assert (tmp_path / "out" / "report.md").read_text() == "an earlier comparison"


def test_missing_fold_without_train_names_folder_and_fold(results, tmp_path):
    _model(results, "nnUNetTrainer", folds=(0, 1))
    partial = _model(results, "nnUNetTrainerNoMirroring", folds=(0,))
    with pytest.raises(FileNotFoundError, match=rf"--train(.|\n)*{partial}: fold\(s\) 1 have no checkpoint_final"):
        _run(tmp_path, folds=[0, 1])


def test_no_test_cases(results, tmp_path):
    import shutil

    _model(results, "nnUNetTrainer")
    _model(results, "nnUNetTrainerNoMirroring")
    shutil.rmtree(tmp_path / "raw" / DATASET / "imagesTs")
    with pytest.raises(FileNotFoundError, match="no usable test cases.*imagesTs"):
        _run(tmp_path)


def test_models_of_different_label_sets(results, tmp_path):
    _model(results, "nnUNetTrainer")
    other = _model(results, "nnUNetTrainerNoMirroring", labels={"background": 0, "rod": 1})
    with pytest.raises(ValueError, match=f"{other} was trained with labels"):
        _run(tmp_path)


def test_models_of_different_datasets(results, tmp_path):
    _model(results, "nnUNetTrainer")
    _model(results, "nnUNetTrainerNoMirroring", dataset="Dataset903_Other")
    with pytest.raises(ValueError, match="different datasets: Dataset903_Other"):
        _run(tmp_path)


def test_models_of_different_configurations(results, tmp_path):
    _model(results, "nnUNetTrainer")
    other = _model(results, "nnUNetTrainerNoMirroring", configuration="3d_lowres")
    with pytest.raises(ValueError, match=f"{other / 'fold_0' / 'checkpoint_final.pth'}.*'3d_lowres'"):
        _run(tmp_path)


def test_unknown_trainer_and_arguments(results, tmp_path):
    with pytest.raises(ValueError, match="nnUNetTrainerDoesNotExist"):
        _run(tmp_path, trainers=("nnUNetTrainer", "nnUNetTrainerDoesNotExist"))
    with pytest.raises(ValueError, match="include 0"):
        _run(tmp_path, angles=[30, 60])
    with pytest.raises(ValueError, match="one per trainer.*3 plans"):
        _run(tmp_path, plans=["a", "b", "c"])
    with pytest.raises(ValueError, match="Dataset999|999"):
        module.compare(999, ["nnUNetTrainer"], tmp_path / "out")


def test_cli_reports_the_error(results, tmp_path, capsys):
    code = cli.main(["compare", "-d", "902", "-tr", "nnUNetTrainer", "-f", "0", "-o", str(tmp_path / "out")])
    assert code == 2
    assert "nnUNetTrainer__nnUNetPlans__3d_fullres: fold(s) 0" in capsys.readouterr().err
