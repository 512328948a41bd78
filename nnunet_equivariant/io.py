"""Output helpers every writer shares: atomic files and folders, NIfTI volumes, nnU-Net dataset folders.

Atomic output: writers fill a temporary sibling and rename it into place at the end, so an interrupted run
leaves no half-written dataset, report or mesh; ``overwrite=False`` refuses an existing target before any
work and again just before the rename.

Volumes: arrays are indexed ``(x, y, z)``; SimpleITK's numpy view is ``(z, y, x)``, so ``write_nifti``
transposes, and nnU-Net (which transposes back) reads the array as given.
"""
from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

__all__ = ["check_target", "atomic_folder", "atomic_file", "atomic_write_text", "write_nifti",
           "dataset_folder_name", "raw_dataset_target"]


def check_target(target: Path, overwrite: bool) -> None:
    if Path(target).exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite (overwrite=True) to replace it")


@contextmanager
def atomic_folder(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``target`` when the block succeeds."""
    target = Path(target)
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        check_target(target, overwrite)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` renamed into place when the block succeeds. The temporary name
    ends like ``path`` (every suffix: ``.nii.gz``, ``.pt2``), so writers that pick the format by the ending
    write the same format; it starts with ``.``."""
    path = Path(path)
    check_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    ending = "".join(path.suffixes)
    tmp = path.with_name(f".{path.name[:len(path.name) - len(ending)]}.tmp-{uuid.uuid4().hex[:8]}{ending}")
    try:
        yield tmp
        check_target(path, overwrite)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Write a text file through a temporary file and a rename."""
    with atomic_file(path, overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_nifti(path: str | Path, array_xyz: np.ndarray, spacing: Sequence[float] | float,
                origin: Sequence[float] | None = None, direction: np.ndarray | None = None) -> None:
    """Write an ``(x, y, z)`` array as a compressed NIfTI with the given geometry (direction: 3x3)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array_xyz).transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))])
    if origin is not None:
        image.SetOrigin([float(o) for o in origin])
    if direction is not None:
        image.SetDirection([float(d) for d in np.asarray(direction, dtype=np.float64).ravel()])
    sitk.WriteImage(image, str(path), useCompression=True)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetXXX_NAME`` for an id in 1..999 and a name without ``_`` or ``/``."""
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset id must be in 1..999, got {dataset_id}")
    if not name or "_" in name or "/" in name:
        raise ValueError(f"dataset name must be non-empty without '_' or '/', got {name!r}")
    return f"Dataset{int(dataset_id):03d}_{name}"


def raw_dataset_target(raw_root: str | Path, dataset_id: int, name: str, overwrite: bool = False) -> Path:
    """``raw_root/DatasetXXX_NAME`` after checking id and name, that no other dataset uses the id (nnU-Net
    needs unique ids) and that the folder does not exist unless ``overwrite``."""
    raw_root = Path(raw_root)
    folder = dataset_folder_name(dataset_id, name)
    if raw_root.is_dir():
        clash = sorted(p.name for p in raw_root.glob(f"Dataset{int(dataset_id):03d}_*") if p.name != folder)
        if clash:
            raise FileExistsError(f"dataset id {dataset_id} is already used by {clash[0]} in {raw_root}; "
                                  "nnU-Net needs unique ids")
    target = raw_root / folder
    check_target(target, overwrite)
    return target
