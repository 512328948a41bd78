"""Laterality mode's prediction splitting: merged labels back to the original left/right labels.

Each voxel gets the side of the patient it lies on (``side_map``), in the patient's frame given by the
image's :class:`~nnunet_equivariant.geometry.Geometry`; convention and assumptions in the package docstring.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ...geometry import Geometry
from ...io import atomic_file

__all__ = ["side_map", "split_segmentation", "split_probabilities", "split_prediction_files",
           "split_prediction_folder"]


def side_map(merged_seg: np.ndarray, geometry: Geometry, merged_values: Iterable[int]) -> np.ndarray:
    """``+1`` (left) / ``-1`` (right) per voxel of a ``(z, y, x)`` segmentation: each connected component of
    a value in ``merged_values`` takes the side of its centroid, every other voxel its own side."""
    from scipy import ndimage

    x = geometry.centred_coordinate(0)  # LPS x about the image centre: positive is the patient's left
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
        geometry = Geometry.from_sitk(image)
        seg = sitk.GetArrayFromImage(image)
        side = side_map(seg, geometry, pairs)
        out = sitk.GetImageFromArray(split_segmentation(seg, geometry, merged_labels, record).astype(seg.dtype))
        out.CopyInformation(image)
        npz = Path(f"{os.fspath(truncated)}.npz")
        with atomic_file(f, overwrite=True) as tmp:  # the segmentation is replaced last
            sitk.WriteImage(out, str(tmp), True)
            if npz.exists():
                probabilities = np.load(npz)["probabilities"]
                with atomic_file(npz, overwrite=True) as tmp_npz:
                    np.savez_compressed(tmp_npz, probabilities=split_probabilities(probabilities, side, merged_labels,
                                                                                   record))
        written.append(f)
    return written


def split_prediction_folder(folder: str | os.PathLike, dataset_json: Mapping) -> list[Path]:
    """``split_prediction_files`` for every segmentation in ``folder`` (nnU-Net's output folder)."""
    ending = dataset_json["file_ending"]
    files = sorted(p for p in Path(folder).glob(f"*{ending}") if not p.name.startswith("."))
    return split_prediction_files([str(p)[:-len(ending)] for p in files], dataset_json)
