"""What the package relies on in nnU-Net's predictor, pinned: these tests fail, naming what changed, when an
nnU-Net release changes the flags of ``nnUNetv2_predict`` that ``nnunet-equivariant predict`` mirrors, or
the functions, methods and attributes ``inference/predict.py``, ``rotation_tta.py``, ``export.py`` and
``evaluation/`` call."""
import argparse
import inspect

import pytest
import torch

from nnunet_equivariant.commands import predict as predict_command

# our flags that nnU-Net does not have
OWN_FLAGS = {"--rotation_tta", "--rotation-tta", "--symmetric_tiling", "--symmetric-tiling"}
# nnU-Net requires these in one of its two parsers; ours takes either -d and -c, or -m (checked in run)
EITHER_OR = {"-d", "-c", "-m"}


class _Parsed(Exception):
    def __init__(self, parser):
        super().__init__("parser captured")
        self.parser = parser


def _nnunet_parser(entry_point) -> argparse.ArgumentParser:
    """The parser an nnU-Net console entry point builds, captured when it parses (nothing runs)."""
    def capture(self, *args, **kwargs):
        raise _Parsed(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_args", capture)
        with pytest.raises(_Parsed) as parsed:
            entry_point()
    return parsed.value.parser


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {opt: a for a in parser._actions if not isinstance(a, argparse._HelpAction) for opt in a.option_strings}


@pytest.fixture
def parsers(monkeypatch, capsys):
    from nnunetv2.inference import predict_from_raw_data as nnunet

    for variable in ("nnUNet_npp", "nnUNet_nps"):  # both read at parser construction
        monkeypatch.delenv(variable, raising=False)
    theirs = {"nnUNetv2_predict": _nnunet_parser(nnunet.predict_entry_point),
              "nnUNetv2_predict_from_modelfolder": _nnunet_parser(nnunet.predict_entry_point_modelfolder)}
    ours = predict_command.add_parser(argparse.ArgumentParser().add_subparsers())
    capsys.readouterr()  # nnU-Net prints its citation before parsing
    return theirs, ours


def test_predict_takes_every_flag_of_nnunets_predict_commands_as_nnunet_parses_it(parsers):
    theirs, ours = parsers
    own = _flags(ours)
    for command, parser in theirs.items():
        for flag, action in _flags(parser).items():
            assert flag in own, f"nnU-Net's {command} has a flag {flag} that 'nnunet-equivariant predict' lacks"
            mine = own[flag]
            what = f"{command} {flag}"
            assert type(mine) is type(action), f"{what}: nnU-Net's action is {type(action).__name__}"
            assert mine.dest == action.dest, f"{what}: nnU-Net stores it as {action.dest!r}"
            assert mine.nargs == action.nargs, f"{what}: nnU-Net takes nargs={action.nargs!r}"
            assert (mine.type or str) is (action.type or str), f"{what}: nnU-Net parses it as {action.type}"
            assert mine.default == action.default, f"{what}: nnU-Net's default is {action.default!r}"
            assert mine.required == action.required or flag in EITHER_OR, f"{what}: required={action.required}"
            assert mine.choices is None or action.choices is None or set(action.choices) <= set(mine.choices)


def test_predict_has_no_flag_nnunet_lacks_but_its_own(parsers):
    theirs, ours = parsers
    nnunet_flags = set().union(*(_flags(p) for p in theirs.values()))
    assert set(_flags(ours)) - nnunet_flags == OWN_FLAGS


def _parameters(function) -> list[str]:
    return [p for p in inspect.signature(function).parameters if p != "self"]


def test_the_predictor_methods_and_helpers_we_call_keep_their_signatures():
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    expected = {  # called with these keywords (or positions) in nnunet_equivariant
        nnUNetPredictor.__init__: ["tile_step_size", "use_gaussian", "use_mirroring", "perform_everything_on_device",
                                   "device", "verbose", "verbose_preprocessing", "allow_tqdm"],
        nnUNetPredictor.initialize_from_trained_model_folder: ["model_training_output_dir", "use_folds",
                                                               "checkpoint_name"],
        nnUNetPredictor.predict_from_files: [
            "list_of_lists_or_source_folder", "output_folder_or_list_of_truncated_output_files", "save_probabilities",
            "overwrite", "num_processes_preprocessing", "num_processes_segmentation_export",
            "folder_with_segs_from_prev_stage", "num_parts", "part_id"],
        nnUNetPredictor.predict_from_files_sequential: [
            "list_of_lists_or_source_folder", "output_folder_or_list_of_truncated_output_files", "save_probabilities",
            "overwrite", "folder_with_segs_from_prev_stage"],
        nnUNetPredictor.predict_single_npy_array: ["input_image", "image_properties", "segmentation_previous_stage",
                                                   "output_file_truncated", "save_or_return_probabilities"],
        # protected hooks we override: rotation TTA per patch, and which outputs a call writes (laterality)
        nnUNetPredictor._internal_maybe_mirror_and_predict: ["x"],
        nnUNetPredictor._manage_input_and_output_lists: [
            "list_of_lists_or_source_folder", "output_folder_or_list_of_truncated_output_files",
            "folder_with_segs_from_prev_stage", "overwrite", "part_id", "num_parts", "save_probabilities"],
        # symmetric tiling: the sliding window's padding, tiles and their accumulation
        nnUNetPredictor.predict_sliding_window_return_logits: ["input_image"],
        nnUNetPredictor._internal_get_sliding_window_slicers: ["image_size"],
        nnUNetPredictor._internal_predict_sliding_window_return_logits: ["data", "slicers", "do_on_device"],
        compute_gaussian.__wrapped__: ["tile_size", "sigma_scale", "value_scaling_factor", "dtype", "device"],
        compute_steps_for_sliding_window: ["image_size", "tile_size", "tile_step_size"],
        get_output_folder: ["dataset_name_or_id", "trainer_name", "plans_identifier", "configuration", "fold"],
        recursive_find_trainer_class_by_name: ["trainer_name"],
    }
    for function, parameters in expected.items():
        assert _parameters(function) == parameters, f"nnU-Net changed the signature of {function.__qualname__}"


def test_the_predictor_attributes_we_read_exist_and_the_output_hook_returns_the_outputs(tmp_path):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    for attribute in ("network", "plans_manager", "configuration_manager", "dataset_json", "trainer_name",
                      "allowed_mirroring_axes", "use_mirroring", "tile_step_size", "device", "use_gaussian",
                      "allow_tqdm"):
        assert hasattr(predictor, attribute), f"nnUNetPredictor no longer has .{attribute}"
    predictor.dataset_json = {"file_ending": ".nii.gz"}
    inputs = [[str(tmp_path / f"case{i}_0000.nii.gz")] for i in range(3)]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "case1.nii.gz").write_bytes(b"")  # already predicted: skipped without overwrite
    lists, truncated, previous = predictor._manage_input_and_output_lists(
        inputs, str(tmp_path / "out"), None, overwrite=False, part_id=0, num_parts=1, save_probabilities=False)
    assert truncated == [str(tmp_path / "out" / "case0"), str(tmp_path / "out" / "case2")], \
        "the second value is the outputs (without file ending) this call writes"
    assert lists == [inputs[0], inputs[2]] and previous == [None, None]
