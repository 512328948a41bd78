"""Laterality: reflection-invariant networks and left/right labels.

A network that commutes with a left-right reflection (O(3) steerable; mirror-symmetric along the patient's
left-right axis) gives a left structure and its mirror image the same label: with lateralised labels
(``left_kidney`` / ``right_kidney``) it can only guess the side. Such trainers refuse a dataset with
lateralised labels (``LateralityGuardMixin``), unless the dataset is in *laterality mode*:

1. ``nnunet-equivariant laterality_merge -d SRC -o DST`` writes a copy of the raw dataset whose paired
   labels are merged (``left_kidney`` + ``right_kidney`` -> ``kidney``) and whose ``dataset.json`` records
   the merge under ``"laterality"``;
2. plan, preprocess and train on DST with nnU-Net's usual commands (the guard accepts it);
3. ``nnunet-equivariant predict ...`` sees the record in the model's ``dataset.json`` and writes the
   original labels: each merged structure is given the side it lies on in the patient's frame.

One module per job: ``labels`` (which label names a side, the merged label set), ``guard`` (the trainers'
refusal, ``LateralityGuardMixin``), ``dataset`` (the merged copy of a raw dataset) and ``split`` (the
prediction split by side); the image geometry is :class:`nnunet_equivariant.geometry.Geometry`. Every public
name is importable from this package.

Why the dataset, not a trainer variant or an environment flag: labels are a property of the dataset in
nnU-Net (``dataset.json``; label changes are dataset conversions), so the stock trainers, loss, validation
and ``nnUNetv2_evaluate_folder`` all work on the merged labels unchanged, and the record travels with the
model (nnU-Net copies ``dataset.json`` into the preprocessed and results folders, ignoring keys it does not
know). A trainer variant would have to remap labels inside nnU-Net's loaders, validation and export; a flag
in the environment would not be stored with the model.

Side, convention and assumptions (``side_map``):

- Physical coordinates are ITK's (SimpleITK, nnU-Net's default reader): LPS, ``+x`` points to the patient's
  **left**. A voxel's position is ``origin + direction @ (spacing * index)``, so a rotated or oblique
  acquisition is handled through the header's direction matrix, not through array halves.
- The header's ``x`` axis is the patient's left-right axis (true for images converted from DICOM, where the
  patient coordinate system is LPS), and the midsagittal plane is ``x = x_c`` with ``x_c`` the ``x`` of the
  image's centre (the field of view is centred on the patient left-right, as for head and trunk scans).
- A connected component of a merged label gets the side of its centroid, so a structure that reaches a
  little over ``x_c`` is not cut; voxels elsewhere (probabilities) get their own side.
"""
from __future__ import annotations

from ...geometry import Geometry
from .dataset import write_merged_dataset
from .guard import (LR_COMPONENT_THRESHOLD, LateralityError, LateralityGuardMixin, check_laterality,
                    left_right_data_axes)
from .labels import LEFT_TOKENS, RIGHT_TOKENS, label_side, lateralised_labels, merge_plan
from .split import side_map, split_prediction_files, split_prediction_folder, split_probabilities, split_segmentation

__all__ = [
    "LEFT_TOKENS",
    "RIGHT_TOKENS",
    "label_side",
    "lateralised_labels",
    "merge_plan",
    "LR_COMPONENT_THRESHOLD",
    "LateralityError",
    "check_laterality",
    "left_right_data_axes",
    "LateralityGuardMixin",
    "write_merged_dataset",
    "Geometry",
    "side_map",
    "split_segmentation",
    "split_probabilities",
    "split_prediction_files",
    "split_prediction_folder",
]
