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

import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "LEFT_TOKENS",
    "RIGHT_TOKENS",
    "label_side",
    "lateralised_labels",
    "merge_plan",
    "LateralityError",
    "check_laterality",
    "left_right_data_axes",
    "LateralityGuardMixin",
    "write_merged_dataset",
    "side_map",
    "split_segmentation",
    "split_probabilities",
    "split_prediction_files",
    "split_prediction_folder",
]

LEFT_TOKENS = frozenset({"left", "l", "lt"})
RIGHT_TOKENS = frozenset({"right", "r", "rt"})
#: A data axis counts as left-right when the left-right component of its unit direction exceeds this.
LR_COMPONENT_THRESHOLD = 0.5


def _tokens(name: str) -> list[str]:
    """Words of a label name: split at non-alphanumerics and camelCase (``LeftLung`` -> left, lung)."""
    return [t.lower() for t in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)]


def label_side(name: str) -> tuple[str, str] | None:
    """``("left" | "right", base name)`` if ``name`` names a side (``left_kidney``, ``Kidney_L``, ``l_hippo``,
    ``LeftLung``, ``kidney right``), else ``None``. The base name is the other words joined by ``_``."""
    tokens = _tokens(name)
    sides = [("left" if t in LEFT_TOKENS else "right") for t in tokens if t in LEFT_TOKENS | RIGHT_TOKENS]
    if len(sides) != 1:
        return None
    base = "_".join(t for t in tokens if t not in LEFT_TOKENS | RIGHT_TOKENS)
    return (sides[0], base) if base else None


def lateralised_labels(labels: Mapping[str, object]) -> dict[str, tuple[str, str]]:
    """The labels of a ``dataset.json`` ``labels`` mapping that name a side: ``{name: (side, base)}``."""
    return {name: s for name in labels if name != "background" and (s := label_side(name)) is not None}


def merge_plan(labels: Mapping[str, int]) -> tuple[dict[str, int], dict[int, int], dict[str, dict[str, int]]]:
    """Merged labels of a dataset with lateralised labels (integer label values only, no regions).

    Returns ``(merged_labels, lookup, pairs)``: the new ``labels`` mapping (background 0, then classes in
    order of first value), ``lookup`` old value -> new value, and ``pairs`` merged name -> ``{"left": old
    value, "right": old value}`` (a side may be missing)."""
    for name, value in labels.items():
        if isinstance(value, (list, tuple)) or isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"laterality merge needs integer label values, label {name!r} has {value!r} "
                             f"(region-based datasets are not supported)")
    sides = lateralised_labels(labels)
    if not sides:
        raise ValueError(f"no lateralised labels (names with left/right, l_/r_, _L/_R) in {sorted(labels)}")
    merged: dict[str, int] = {}
    lookup: dict[int, int] = {}
    pairs: dict[str, dict[str, int]] = {}
    for name, value in sorted(labels.items(), key=lambda kv: kv[1]):
        new_name = sides[name][1] if name in sides else name
        if new_name in merged and name not in sides:
            raise ValueError(f"label {name!r} clashes with the merged name of a lateral pair")
        if new_name not in merged:
            merged[new_name] = len(merged)
        lookup[value] = merged[new_name]
        if name in sides:
            side = sides[name][0]
            if side in pairs.setdefault(new_name, {}):
                raise ValueError(f"two {side} labels merge into {new_name!r}: {name!r} and another")
            pairs[new_name][side] = value
    if merged.get("background", 0) != 0 or lookup.get(0, 0) != 0:
        raise ValueError("label 0 must be background")
    return merged, lookup, pairs


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
    from ..symmetry import get_symmetry

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
        from ..symmetry import get_symmetry

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


# --- laterality mode: merge the dataset, split the prediction ------------------------------------------


def write_merged_dataset(raw: str | os.PathLike, source: int | str, target_id: int, name: str | None = None,
                         overwrite: bool = False) -> Path:
    """Write ``DatasetXXX_NAME`` in ``raw``: the images of ``source`` (a dataset folder, id or name) copied,
    the labels (``labelsTr``, ``labelsTs`` if present) with left/right pairs merged (``merge_plan``), and a
    ``dataset.json`` with the merged ``labels`` plus ``"laterality"``: the original labels and the pairs."""
    import SimpleITK as sitk

    from ..io import atomic_folder

    raw = Path(raw)
    src = _dataset_folder(raw, source)
    dataset_json = json.loads((src / "dataset.json").read_text())
    merged, lookup, pairs = merge_plan(dataset_json["labels"])
    name = name or src.name.split("_", 1)[1] + "Merged"
    target = raw / f"Dataset{int(target_id):03d}_{name}"
    ending = dataset_json["file_ending"]
    table = np.zeros(max(lookup) + 1, dtype=np.uint8)
    for old, new in lookup.items():
        table[old] = new
    with atomic_folder(target, overwrite) as tmp:
        for sub in sorted(p.name for p in src.iterdir() if p.is_dir()):
            if sub.startswith("labels"):
                (tmp / sub).mkdir()
                for f in sorted((src / sub).glob(f"*{ending}")):
                    image = sitk.ReadImage(str(f))
                    seg = sitk.GetArrayFromImage(image)
                    if seg.min() < 0 or seg.max() >= len(table):
                        raise ValueError(f"{f}: label values {np.unique(seg).tolist()} outside {sorted(lookup)}")
                    out = sitk.GetImageFromArray(table[seg])
                    out.CopyInformation(image)
                    sitk.WriteImage(out, str(tmp / sub / f.name), True)
            else:
                shutil.copytree(src / sub, tmp / sub)
        new_json = {**dataset_json, "labels": merged, "name": name,
                    "laterality": {"labels": dataset_json["labels"], "pairs": pairs,
                                   "convention": "ITK LPS: +x is the patient's left; midline x = image centre"}}
        (tmp / "dataset.json").write_text(json.dumps(new_json, indent=2))
    return target


def _dataset_folder(raw: Path, source: int | str) -> Path:
    if Path(str(source)).is_dir():
        return Path(str(source))
    if str(source).isdigit():
        found = sorted(raw.glob(f"Dataset{int(source):03d}_*"))
        if len(found) != 1:
            raise FileNotFoundError(f"no unique dataset with id {source} in {raw}: {[p.name for p in found]}")
        return found[0]
    if (raw / str(source)).is_dir():
        return raw / str(source)
    raise FileNotFoundError(f"dataset {source!r} not found in {raw}")


@dataclass(frozen=True)
class Geometry:
    """ITK image geometry: ``size`` (x, y, z), ``spacing``, ``origin``, ``direction`` (9, row-major)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image) -> "Geometry":
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))

    def left_right_coordinate(self) -> np.ndarray:
        """LPS ``x`` of every voxel centre minus that of the image centre, as a ``(z, y, x)`` array (the
        layout of ``sitk.GetArrayFromImage``). Positive: patient's left."""
        D = np.asarray(self.direction, dtype=float).reshape(3, 3)
        index = [np.arange(n, dtype=float) - (n - 1) / 2 for n in self.size]  # centred, image axes i, j, k
        row = D[0] * np.asarray(self.spacing, dtype=float)  # x = sum_i D[0, i] * spacing_i * index_i
        i, j, k = index
        return row[0] * i[None, None, :] + row[1] * j[None, :, None] + row[2] * k[:, None, None]


def side_map(merged_seg: np.ndarray, geometry: Geometry, merged_values: Iterable[int]) -> np.ndarray:
    """``+1`` (left) / ``-1`` (right) per voxel of a ``(z, y, x)`` segmentation: each connected component of
    a value in ``merged_values`` takes the side of its centroid, every other voxel its own side."""
    from scipy import ndimage

    x = geometry.left_right_coordinate()
    if x.shape != merged_seg.shape:
        raise ValueError(f"segmentation shape {merged_seg.shape} does not match the image geometry {x.shape}")
    side = np.where(x >= 0, 1, -1).astype(np.int8)
    for value in merged_values:
        components, n = ndimage.label(merged_seg == value)
        if n == 0:
            continue
        centroid = ndimage.mean(x, components, index=np.arange(1, n + 1))
        component_side = np.where(centroid >= 0, 1, -1).astype(np.int8)
        inside = components > 0
        side[inside] = component_side[components[inside] - 1]
    return side


def _original_lookup(merged_labels: Mapping[str, int], record: Mapping) -> tuple[dict[int, int], dict[int, dict]]:
    """Merged value -> original value for unpaired labels; merged value -> sides for pairs."""
    original = record["labels"]
    pairs = {int(merged_labels[name]): {s: int(v) for s, v in sides.items()} for name, sides in record["pairs"].items()}
    plain = {int(v): int(original[name]) for name, v in merged_labels.items() if int(v) not in pairs}
    return plain, pairs


def split_segmentation(merged_seg: np.ndarray, geometry: Geometry, merged_labels: Mapping[str, int],
                       record: Mapping) -> np.ndarray:
    """The original labels of a ``(z, y, x)`` merged segmentation (``record``: ``dataset.json``'s
    ``"laterality"``). A side a pair lacks keeps the other side's value."""
    plain, pairs = _original_lookup(merged_labels, record)
    side = side_map(merged_seg, geometry, pairs)
    out = np.zeros_like(merged_seg)
    for merged, original in plain.items():
        out[merged_seg == merged] = original
    for merged, sides in pairs.items():
        mask = merged_seg == merged
        left, right = sides.get("left", sides.get("right")), sides.get("right", sides.get("left"))
        out[mask & (side > 0)] = left
        out[mask & (side < 0)] = right
    return out


def split_probabilities(probabilities: np.ndarray, side: np.ndarray, merged_labels: Mapping[str, int],
                        record: Mapping) -> np.ndarray:
    """``(classes_merged, z, y, x)`` -> ``(classes_original, z, y, x)``: a pair's probability goes to the
    channel of the voxel's side (``side``, from ``side_map``), the other side's channel gets 0."""
    plain, pairs = _original_lookup(merged_labels, record)
    n = max(int(v) for v in record["labels"].values()) + 1
    out = np.zeros((n, *probabilities.shape[1:]), dtype=probabilities.dtype)
    for merged, original in plain.items():
        out[original] = probabilities[merged]
    for merged, sides in pairs.items():
        for name, sign in (("left", 1), ("right", -1)):
            if name in sides:
                out[sides[name]] += np.where(side == sign, probabilities[merged], 0)
        if len(sides) == 1:
            (only,) = sides.values()
            out[only] = probabilities[merged]
    return out


def split_prediction_files(truncated_outputs: Iterable[str | os.PathLike], dataset_json: Mapping) -> list[Path]:
    """Rewrite nnU-Net's predictions from merged to original labels: for each output path without ending
    (as nnU-Net names them: ``OUT/CASE``), the segmentation ``OUT/CASE{file_ending}`` and, if present, the
    probabilities ``OUT/CASE.npz``. Each file is replaced atomically. Call it once per prediction (a split
    segmentation is not a merged one any more). Returns the rewritten segmentation files."""
    import SimpleITK as sitk

    record = dataset_json["laterality"]
    merged_labels = dataset_json["labels"]
    ending = dataset_json["file_ending"]
    _, pairs = _original_lookup(merged_labels, record)
    written = []
    for truncated in truncated_outputs:
        f = Path(f"{os.fspath(truncated)}{ending}")
        if not f.is_file():
            raise FileNotFoundError(f"no prediction {f} to split")
        image = sitk.ReadImage(str(f))
        geometry = Geometry.of(image)
        seg = sitk.GetArrayFromImage(image)
        side = side_map(seg, geometry, pairs)
        out = sitk.GetImageFromArray(split_segmentation(seg, geometry, merged_labels, record).astype(seg.dtype))
        out.CopyInformation(image)
        tmp = f.with_name(f".{f.name[:-len(ending)]}.tmp{ending}")
        sitk.WriteImage(out, str(tmp), True)
        npz = Path(f"{os.fspath(truncated)}.npz")
        if npz.exists():
            probabilities = np.load(npz)["probabilities"]
            tmp_npz = npz.with_name(f".{npz.stem}.tmp.npz")
            np.savez_compressed(tmp_npz, probabilities=split_probabilities(probabilities, side, merged_labels, record))
            os.replace(tmp_npz, npz)
        os.replace(tmp, f)
        written.append(f)
    return written


def split_prediction_folder(folder: str | os.PathLike, dataset_json: Mapping) -> list[Path]:
    """``split_prediction_files`` for every segmentation in ``folder`` (nnU-Net's output folder)."""
    ending = dataset_json["file_ending"]
    files = sorted(p for p in Path(folder).glob(f"*{ending}") if not p.name.startswith("."))
    return split_prediction_files([str(p)[:-len(ending)] for p in files], dataset_json)
