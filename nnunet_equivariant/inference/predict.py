"""``nnunet-equivariant predict``: ``nnUNetv2_predict`` with symmetry-aware rotation TTA.

``predict`` does what nnU-Net's ``nnUNetv2_predict`` entry point does, through nnU-Net's predictor API: it
builds a ``RotationTTAPredictor`` (an ``nnUNetPredictor``) with the entry point's settings, loads the model
with ``initialize_from_trained_model_folder`` and predicts with ``predict_from_files`` (or
``predict_from_files_sequential`` for ``-npp 0 -nps 0``, as nnU-Net does), so ``--rotation_tta none`` is
exactly ``nnUNetv2_predict``. Beyond the public methods it relies on two protected hooks of
``nnUNetPredictor``: ``_internal_maybe_mirror_and_predict`` (the per-patch test-time augmentation,
``rotation_tta``) and ``_manage_input_and_output_lists`` (which outputs this call writes, for laterality
mode). The command's parser mirrors nnU-Net's flags (``commands/predict.py``);
``tests/test_nnunet_contract.py`` fails when nnU-Net changes those flags or the signatures used here.

A model trained in laterality mode (its ``dataset.json`` holds ``"laterality"``, see ``laterality``)
predicts merged labels; the segmentations (and ``.npz`` probabilities) written by this call are then split
back into the original left/right labels.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch

from . import DEVICES, ROTATION_TTA_MODES
from .rotation_tta import RotationTTAPredictor

__all__ = ["trained_model_folder", "predict"]

def trained_model_folder(dataset: str | int, configuration: str, trainer: str = "nnUNetTrainer",
                         plans: str = "nnUNetPlans") -> str:
    """``nnUNet_results/DatasetX/Trainer__Plans__configuration``, as ``nnUNetv2_predict -d -tr -p -c`` finds
    it (``dataset``: id or name)."""
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    return get_output_folder(dataset, trainer, plans, configuration)


def predict(
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    model_folder: str | os.PathLike,
    folds: Sequence[int | str] = (0, 1, 2, 3, 4),
    rotation_tta: str = "none",
    symmetric_tiling: bool | str = "auto",
    step_size: float = 0.5,
    use_mirroring: bool = True,
    checkpoint: str = "checkpoint_final.pth",
    save_probabilities: bool = False,
    overwrite: bool = True,
    num_processes_preprocessing: int = 3,
    num_processes_segmentation_export: int = 3,
    previous_stage_predictions: str | os.PathLike | None = None,
    num_parts: int = 1,
    part_id: int = 0,
    device: str = "cuda",
    perform_everything_on_device: bool = True,
    verbose: bool = False,
    progress_bar: bool = True,
) -> list[str]:
    """Predict every case of ``input_folder`` (nnU-Net raw layout) into ``output_folder`` with the fold
    ensemble ``folds`` (integers or ``"all"``) of a trained ``model_folder``, averaged over the rotation TTA
    ``rotation_tta`` (``RotationTTAPredictor``); ``symmetric_tiling`` pads and tiles every case
    mirror-symmetrically, so that a grid rotation of a case rotates a steerable network's prediction exactly
    (``True``; ``False``: nnU-Net's sliding window; ``"auto"``: where the network has a symmetry or
    ``rotation_tta`` is ``"grid"``, see ``RotationTTAPredictor.tiles_symmetrically``).

    The arguments are ``nnUNetv2_predict``'s flags, typed: ``use_mirroring`` is ``not --disable_tta``,
    ``overwrite`` is ``not --continue_prediction``, ``progress_bar`` is ``not --disable_progress_bar``,
    ``perform_everything_on_device`` is ``not --not_on_device``. With no worker processes
    (``num_processes_preprocessing == num_processes_segmentation_export == 0``) the cases are predicted in
    this process, one after the other (nnU-Net's sequential mode, which predicts all cases: ``num_parts``
    must then be 1). Returns the outputs written by this call, without file ending (``OUT/CASE``).
    ``ValueError`` naming the bad value.
    """
    if rotation_tta not in ROTATION_TTA_MODES:
        raise ValueError(f"rotation_tta must be one of {ROTATION_TTA_MODES}, got {rotation_tta!r}")
    if not (isinstance(symmetric_tiling, bool) or symmetric_tiling == "auto"):
        raise ValueError(f"symmetric_tiling must be True, False or 'auto', got {symmetric_tiling!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if not 0 <= part_id < num_parts:
        raise ValueError(f"part_id must be in 0..num_parts - 1 (counting from 0), got part_id {part_id} of "
                         f"num_parts {num_parts}")
    sequential = num_processes_preprocessing == 0 and num_processes_segmentation_export == 0
    if sequential and num_parts != 1:
        raise ValueError(f"num_parts {num_parts}: splitting the cases into parts needs worker processes "
                         f"(-npp and -nps not both 0); nnU-Net's sequential mode predicts every case")
    folds = [f if f == "all" else int(f) for f in folds]
    model_folder = os.fspath(model_folder)
    if not os.path.isfile(os.path.join(model_folder, "plans.json")):
        raise FileNotFoundError(f"{model_folder} is not a trained nnU-Net model folder (no plans.json)")
    os.makedirs(output_folder, exist_ok=True)

    predictor = _RecordingPredictor(
        tile_step_size=step_size, use_gaussian=True, use_mirroring=use_mirroring,
        perform_everything_on_device=perform_everything_on_device, device=torch.device(device), verbose=verbose,
        verbose_preprocessing=verbose, allow_tqdm=progress_bar, rotation_tta=rotation_tta,
        symmetric_tiling=symmetric_tiling)
    predictor.initialize_from_trained_model_folder(model_folder, folds, checkpoint_name=checkpoint)
    previous = None if previous_stage_predictions is None else os.fspath(previous_stage_predictions)
    if sequential:
        print("Running in non-multiprocessing mode")  # as nnUNetv2_predict says it
        predictor.predict_from_files_sequential(
            os.fspath(input_folder), os.fspath(output_folder), save_probabilities=save_probabilities,
            overwrite=overwrite, folder_with_segs_from_prev_stage=previous)
    else:
        predictor.predict_from_files(
            os.fspath(input_folder), os.fspath(output_folder), save_probabilities=save_probabilities,
            overwrite=overwrite, num_processes_preprocessing=num_processes_preprocessing,
            num_processes_segmentation_export=num_processes_segmentation_export,
            folder_with_segs_from_prev_stage=previous, num_parts=num_parts, part_id=part_id)

    if "laterality" in (predictor.dataset_json or {}):
        from .laterality import split_prediction_files

        written = split_prediction_files(predictor.predicted_outputs, predictor.dataset_json)
        print(f"laterality mode: {len(written)} predictions split into left/right labels")
    return list(predictor.predicted_outputs)


class _RecordingPredictor(RotationTTAPredictor):
    """``RotationTTAPredictor`` that records the outputs nnU-Net decided to predict in this call (this part's
    cases, minus those already done when not overwriting): the files to split by side. nnU-Net's
    ``predict_from_files`` and ``predict_from_files_sequential`` both ask ``_manage_input_and_output_lists``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.predicted_outputs: list[str] = []

    def _manage_input_and_output_lists(self, *args, **kwargs):
        inputs, truncated, previous = super()._manage_input_and_output_lists(*args, **kwargs)
        self.predicted_outputs = list(truncated or [])
        return inputs, truncated, previous
