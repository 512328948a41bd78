"""``nnunet-equivariant predict``: ``nnUNetv2_predict`` with symmetry-aware rotation TTA.

Every flag but ``--rotation_tta`` is handed to nnU-Net's own entry point (``nnUNetv2_predict``, or
``nnUNetv2_predict_from_modelfolder`` when ``-m MODEL_FOLDER`` is given), which runs with
``RotationTTAPredictor`` in place of ``nnUNetPredictor`` for the duration of the call. So the flags, their
defaults, ``-num_parts``/``-part_id``, cascades and the sequential ``-npp 0 -nps 0`` mode are nnU-Net's,
and stay in step with the installed nnU-Net; ``--rotation_tta none`` is exactly ``nnUNetv2_predict``.

A model trained in laterality mode (its ``dataset.json`` holds ``"laterality"``, see ``laterality.py``)
predicts merged labels; the written segmentations (and ``.npz`` probabilities) are then split back into
the original left/right labels.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Sequence

from . import ROTATION_TTA_MODES

__all__ = ["predict"]


@contextlib.contextmanager
def _nnunet_predictor_class(predictor_class: type) -> Iterator[None]:
    from nnunetv2.inference import predict_from_raw_data

    original = predict_from_raw_data.nnUNetPredictor
    predict_from_raw_data.nnUNetPredictor = predictor_class
    try:
        yield
    finally:
        predict_from_raw_data.nnUNetPredictor = original


def predict(nnunet_args: Sequence[str], rotation_tta: str = "none") -> int:
    """Run nnU-Net's prediction entry point on ``nnunet_args`` with ``RotationTTAPredictor(rotation_tta)``."""
    if rotation_tta not in ROTATION_TTA_MODES:
        raise ValueError(f"rotation_tta must be one of {ROTATION_TTA_MODES}, got {rotation_tta!r}")
    from nnunetv2.inference import predict_from_raw_data

    from .rotation_tta import RotationTTAPredictor

    used: list[RotationTTAPredictor] = []
    outputs: list[str] = []  # the outputs (without file ending) this run predicts: this part, not yet done

    class Predictor(RotationTTAPredictor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, rotation_tta=rotation_tta, **kwargs)
            used.append(self)

        def _manage_input_and_output_lists(self, *args, **kwargs):
            inputs, truncated, previous = super()._manage_input_and_output_lists(*args, **kwargs)
            outputs.extend(truncated or [])
            return inputs, truncated, previous

    model_folder = "-m" in nnunet_args
    entry = (predict_from_raw_data.predict_entry_point_modelfolder if model_folder
             else predict_from_raw_data.predict_entry_point)
    prog = "nnUNetv2_predict_from_modelfolder" if model_folder else "nnUNetv2_predict"
    argv = sys.argv
    sys.argv = [f"nnunet-equivariant predict ({prog} flags)", *nnunet_args]
    try:
        with _nnunet_predictor_class(Predictor):
            entry()
    finally:
        sys.argv = argv
    if used and "laterality" in (used[-1].dataset_json or {}):
        from .laterality import split_prediction_files

        written = split_prediction_files(outputs, used[-1].dataset_json)
        print(f"laterality mode: {len(written)} predictions split into left/right labels")
    return 0
