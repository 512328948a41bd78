"""The training-time guard: a network that cannot tell left from right refuses lateralised labels.

O(3) steerable networks confuse the sides in every orientation; a mirror-symmetric network confuses them
when one of its mirror axes is the images' left-right axis (read from the ITK direction matrices). Such a
trainer raises ``LateralityError`` at construction, before anything is trained, and names laterality mode
(``nnunet-equivariant laterality_merge``) as the way out.
"""
from __future__ import annotations

import os
import pickle
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from ...symmetry import get_symmetry
from .labels import lateralised_labels

__all__ = ["LR_COMPONENT_THRESHOLD", "LateralityError", "left_right_data_axes", "check_laterality",
           "LateralityGuardMixin"]

#: A data axis counts as left-right when the left-right component of its unit direction exceeds this.
LR_COMPONENT_THRESHOLD = 0.5


class LateralityError(ValueError):
    """A reflection-invariant network was asked to learn lateralised labels."""


def left_right_data_axes(directions: Iterable[Sequence[float]], transpose_forward: Sequence[int] = (0, 1, 2)
                         ) -> set[int]:
    """nnU-Net data axes (of the preprocessed arrays) whose direction has a left-right component above
    ``LR_COMPONENT_THRESHOLD`` in any of the images' ITK ``direction`` matrices (9 numbers, row-major).

    SimpleITK arrays are ``(z, y, x)``: data axis ``d`` is image axis ``2 - d`` before nnU-Net's
    ``transpose_forward``; image axis ``i``'s physical direction is column ``i`` of the direction matrix, and
    its left-right component is row 0 (LPS ``x``)."""
    axes = set()
    for direction in directions:
        D = np.asarray(direction, dtype=float).reshape(3, 3)
        for j, t in enumerate(transpose_forward):
            if abs(D[0, 2 - t]) > LR_COMPONENT_THRESHOLD:
                axes.add(j)
    return axes


def check_laterality(symmetry, labels: Mapping[str, object], directions: Iterable[Sequence[float]] | None = None,
                     transpose_forward: Sequence[int] = (0, 1, 2), trainer_name: str = "this trainer") -> None:
    """Raise ``LateralityError`` if a network with group ``symmetry`` (a name or ``Symmetry``) cannot tell
    left from right and ``labels`` are lateralised.

    O(3) (rotations with reflections) confuses the sides in every orientation. A mirror-symmetric network
    confuses them when one of its mirror axes is a left-right axis of the images (``directions``: the ITK
    direction matrices of the cases; ``None``: unknown, every mirror axis counts)."""
    symmetry = symmetry if hasattr(symmetry, "has_reflections") else get_symmetry(symmetry)
    sides = lateralised_labels(labels)
    if not sides or not symmetry.has_reflections:
        return
    if symmetry.family == "mirror":
        lr_axes = {0, 1, 2} if directions is None else left_right_data_axes(directions, transpose_forward)
        blind = sorted(set(symmetry.mirror_axes) & lr_axes)
        if not blind:
            return
        why = (f"its kernels are mirror-symmetric along data axis {blind} (symmetry {symmetry.name}), the "
               f"patient's left-right axis" + ("" if directions is not None else " as far as it can tell"))
    else:
        why = f"it is equivariant to reflections (symmetry {symmetry.name})"
    raise LateralityError(
        f"{trainer_name} cannot tell left from right: {why}, but the dataset's labels are lateralised "
        f"({', '.join(sorted(sides))}). Either train a network without that reflection (nnUNetTrainerE3nn is "
        f"SO(3), rotations only; a mirror trainer along other axes), or use laterality mode: "
        f"'nnunet-equivariant laterality_merge -d SRC_ID -o NEW_ID' writes the dataset with left/right labels "
        f"merged, train on NEW_ID, and 'nnunet-equivariant predict' splits the prediction by side in the "
        f"patient's frame (docs/inference.md).")


class LateralityGuardMixin:
    """Trainer mixin: refuse lateralised labels when the network (class attribute ``symmetry``) cannot tell
    left from right (``check_laterality``); image directions are read from the preprocessed cases'
    properties. Runs at ``__init__``, before anything is trained or written."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        symmetry = get_symmetry(getattr(self, "symmetry", None))
        labels = dataset_json.get("labels", {})
        if not symmetry.has_reflections or not lateralised_labels(labels):
            return
        directions = None  # only a mirror network's verdict depends on the images' orientation
        if symmetry.family == "mirror":
            directions = _preprocessed_directions(getattr(self, "preprocessed_dataset_folder", None))
        check_laterality(symmetry, labels, directions, self.plans_manager.transpose_forward, type(self).__name__)


def _preprocessed_directions(folder) -> list[tuple[float, ...]] | None:
    """ITK direction matrices of the preprocessed cases (their ``.pkl`` properties), ``None`` if unknown."""
    if folder is None or not os.path.isdir(folder):
        return None
    directions = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".pkl"):
            with open(os.path.join(folder, name), "rb") as f:
                properties = pickle.load(f)
            stuff = properties.get("sitk_stuff") if isinstance(properties, dict) else None
            if not stuff or "direction" not in stuff:
                return None
            directions.append(tuple(stuff["direction"]))
    return directions or None
