"""rotation_eval refuses bad input with a clear error before any model is loaded or any case predicted."""
import json

import pytest

from nnunet_equivariant import cli
from nnunet_equivariant.evaluation import rotation_eval as module
from nnunet_equivariant.synthetic import write_rods_and_discs_dataset


@pytest.fixture
def raw(tmp_path):
    return write_rods_and_discs_dataset(tmp_path / "raw", 902, num_train=1, num_test=2, shape=(12, 12, 12))


@pytest.fixture(autouse=True)
def no_prediction(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a predictor was loaded before the input was checked")

    monkeypatch.setattr(module, "load_predictor", refuse)


def _model(root, name="nnUNetTrainerX__nnUNetPlans__3d_fullres", dataset="Dataset902_RodsDiscs", labels=None,
           folds=(0,)):
    folder = root / dataset / name
    folder.mkdir(parents=True)
    labels = labels or {"background": 0, "rod": 1, "disc": 2}
    dataset_json = {"channel_names": {"0": "synthetic"}, "labels": labels, "file_ending": ".nii.gz",
                    "numTraining": 1}
    plans = {"dataset_name": dataset, "image_reader_writer": "SimpleITKIO"}
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    (folder / "plans.json").write_text(json.dumps(plans))
    for f in folds:
        (folder / f"fold_{f}").mkdir()
        (folder / f"fold_{f}" / "checkpoint_final.pth").write_bytes(b"")
    return folder


def _run(raw, models, out, **kwargs):
    return module.rotation_eval(raw, None, models, out, folds=[0], **kwargs)


def test_angles_outside_range(raw, tmp_path):
    with pytest.raises(ValueError, match=r"\[-180, 180\].*190"):
        _run(raw, [_model(tmp_path)], tmp_path / "out", angles=[0, 190])


def test_unknown_plane(raw, tmp_path):
    with pytest.raises(ValueError, match="transverse"):
        _run(raw, [_model(tmp_path)], tmp_path / "out", planes=["transverse"])


def test_missing_fold(raw, tmp_path):
    model = _model(tmp_path)
    with pytest.raises(FileNotFoundError, match="fold_1/checkpoint_final.pth"):
        module.rotation_eval(raw, None, [model], tmp_path / "out", folds=[0, 1])


def test_not_a_model_folder(raw, tmp_path):
    with pytest.raises(FileNotFoundError, match="plans.json"):
        _run(raw, [tmp_path], tmp_path / "out")


def test_models_of_different_label_sets(raw, tmp_path):
    a = _model(tmp_path)
    b = _model(tmp_path, name="nnUNetTrainerY__nnUNetPlans__3d_fullres", labels={"background": 0, "rod": 1})
    with pytest.raises(ValueError, match="label set"):
        _run(raw, [a, b], tmp_path / "out")


def test_models_of_different_datasets(raw, tmp_path):
    a = _model(tmp_path)
    b = _model(tmp_path, dataset="Dataset903_Other")
    with pytest.raises(ValueError, match="different datasets.*Dataset903_Other"):
        _run(raw, [a, b], tmp_path / "out")


def test_test_folder_without_labels(raw, tmp_path):
    (raw / "labelsTs" / "RodsDiscs_101.nii.gz").unlink()
    with pytest.raises(ValueError, match="no label.*RodsDiscs_101"):
        _run(raw, [_model(tmp_path)], tmp_path / "out")
    with pytest.raises(ValueError, match="needs reference labels"):
        module.rotation_eval(raw / "imagesTs", None, [_model(tmp_path, dataset="Dataset902_B")], tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="label folder"):
        module.rotation_eval(raw / "imagesTs", raw / "nothing", [_model(tmp_path, dataset="Dataset902_C")],
                             tmp_path / "o", folds=[0])


def test_existing_output_is_not_overwritten(raw, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        _run(raw, [_model(tmp_path)], out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(AssertionError, match="predictor was loaded"):  # with --overwrite it goes on to predict
        _run(raw, [_model(tmp_path, dataset="Dataset902_B")], out, overwrite=True)


def test_cli_reports_bad_input(raw, tmp_path, capsys):
    code = cli.main(["rotation_eval", "-i", str(raw), "-m", str(_model(tmp_path)), "-o", str(tmp_path / "o"),
                     "-f", "0", "--angles", "-200", "0"])
    assert code == 2
    assert "rotation_eval: error" in capsys.readouterr().err
