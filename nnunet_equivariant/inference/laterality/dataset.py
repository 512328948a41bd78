"""Laterality mode's dataset conversion: a copy of a raw nnU-Net dataset with left/right labels merged.

The copy's ``dataset.json`` records the merge under ``"laterality"`` (the original labels, the merged
pairs and the side convention); nnU-Net carries that record into the preprocessed and results folders, where
``nnunet-equivariant predict`` reads it to split predictions by side (``split``).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from ...io import atomic_folder
from .labels import merge_plan

__all__ = ["write_merged_dataset"]


def write_merged_dataset(raw: str | os.PathLike, source: int | str, target_id: int, name: str | None = None,
                         overwrite: bool = False) -> Path:
    """Write ``DatasetXXX_NAME`` in ``raw``: the images of ``source`` (a dataset folder, id or name) copied,
    the labels (``labelsTr``, ``labelsTs`` if present) with left/right pairs merged (``merge_plan``), and a
    ``dataset.json`` with the merged ``labels`` plus ``"laterality"``: the original labels and the pairs."""
    import SimpleITK as sitk

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
