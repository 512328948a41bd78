"""Labelled meshes -> an nnU-Net raw dataset: signed-distance volumes and surface-band label maps.

For each closed mesh (see ``close_holes`` / ``acdc_surface``):

- ``imagesTr/CASE_0000.nii.gz``: exact signed distance (float32, physical units, negative inside) on an
  isotropic grid of ``spacing`` covering the mesh plus ``margin_voxels``; identity direction, origin at the
  grid's first node. The channel is named ``noNorm``: distances keep their physical scale (nnU-Net's
  z-scoring would rescale each case by its own extent).
- ``labelsTr/CASE.nii.gz``: the surface band ``|SDF| <= band_width * spacing``, each voxel labelled with the
  class (+1) of the mesh vertex nearest to its closest surface point; background elsewhere. Voxels closest
  to a cap added by hole closing stay background: caps are not anatomy.
- ``meshesTr/CASE.npz``: the ``LabelledMesh`` (vertices, faces, labels), to map predictions back to
  vertices (``nnunet-equivariant mesh from_nnunet``). nnU-Net ignores this folder.
- ``dataset.json`` and ``splits_final.json`` (the official IntrA folds, or group-wise folds that keep both
  frames of an ACDC patient together; fewer folds for small sets, see ``make_splits``). nnU-Net reads
  ``splits_final.json`` only from ``nnUNet_preprocessed/DatasetXXX_NAME/``: it is written there when
  ``preprocessed_root`` is given (``nnUNetv2_plan_and_preprocess`` keeps it), and always beside the raw
  dataset for reference.

Cases marked ``test`` (ACDC's ``testing`` patients) go to ``imagesTs``/``labelsTs``/``meshesTs``.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from nnunet_equivariant.io import atomic_folder, atomic_write_text, check_target, raw_dataset_target, write_nifti
from nnunet_equivariant.meshes.conversion import ConversionReport, read_cases
from nnunet_equivariant.meshes.labelled_mesh import LabelledMesh
from nnunet_equivariant.meshes.sdf import SdfGrid, compute_sdf_grid, signed_distance
from nnunet_equivariant.meshes.sources import MeshCase, MeshSource, grouped_folds

__all__ = ["write_nnunet_dataset", "band_labels", "make_splits", "DEFAULT_NUM_FOLDS"]

DEFAULT_NUM_FOLDS = 5  # nnU-Net's five-fold cross-validation


def band_labels(mesh: LabelledMesh, grid: SdfGrid, band_width: float) -> np.ndarray:
    """Label map ``(nx, ny, nz)`` uint8 of the band ``|SDF| <= band_width * spacing`` (see module docstring)."""
    labels = np.zeros(grid.values.shape, dtype=np.uint8)
    nodes = np.argwhere(np.abs(grid.values) <= band_width * grid.spacing)
    points = grid.origin + grid.spacing * nodes
    _, face, closest = signed_distance(points, mesh.vertices, mesh.faces, closest=True)
    corners = mesh.faces[face]  # (n, 3)
    nearest = corners[np.arange(len(nodes)), np.argmin(
        np.linalg.norm(mesh.vertices[corners] - closest[:, None, :], axis=2), axis=1)]
    on_source = (face < mesh.num_original_faces) & (nearest < mesh.num_labelled)
    cls = np.zeros(len(nodes), dtype=np.uint8)
    cls[on_source] = mesh.labels[nearest[on_source]] + 1
    labels[tuple(nodes.T)] = cls
    return labels


def write_nnunet_dataset(source: MeshSource, raw_root: str | Path, dataset_id: int, *,
                         dataset_name: str | None = None, spacing: float | None = None, grid_size: int = 128,
                         margin_voxels: int = 4, band_width: float = 1.5,
                         preprocessed_root: str | Path | None = None, num_folds: int | None = None, seed: int = 0,
                         overwrite: bool = False) -> ConversionReport:
    """Write ``raw_root/DatasetXXX_NAME`` from a ``MeshSource`` (see module docstring).

    Every argument is checked before any case is read; after reading, nothing aborts the conversion but a
    set in which no case could be read.

    Args:
        spacing: voxel size of every case; default: the median case's longest side spans ``grid_size``
            voxels (margins included).
        band_width: half-thickness of the labelled surface band, in voxels.
        preprocessed_root: ``nnUNet_preprocessed``; when given, ``splits_final.json`` is also written to
            ``preprocessed_root/DatasetXXX_NAME/``.
        num_folds, seed: see ``make_splits``; ``None``: the source's official folds, else five group-wise ones.
    Returns:
        The report (cases written and skipped with their errors, notes such as a reduced number of folds).
    """
    target = raw_dataset_target(raw_root, dataset_id, dataset_name or source.name, overwrite)
    splits_copy = None
    if preprocessed_root is not None:
        splits_copy = Path(preprocessed_root) / target.name / "splits_final.json"
        check_target(splits_copy, overwrite)
    if band_width <= 0 or margin_voxels < 1:
        raise ValueError(f"band_width must be > 0 and margin_voxels >= 1, got {band_width}, {margin_voxels}")
    if spacing is not None and not spacing > 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    _check_num_folds(source, num_folds)

    report = ConversionReport(output=target)
    meshes = read_cases(source.cases, report)
    if not meshes:
        raise ValueError("no case could be read:\n" + report.summary())
    if spacing is None:
        spacing = _median_spacing([m for _, m in meshes], grid_size, margin_voxels, report)
    training = [(c.name, c.group) for c, _ in meshes if not c.test]
    splits = make_splits(source, [n for n, _ in training], [g for _, g in training], num_folds, seed, report)

    with atomic_folder(target, overwrite) as tmp:
        _write_cases(tmp, meshes, source.class_names, spacing, margin_voxels, band_width, report)
        dataset_json = {
            "channel_names": {"0": "noNorm"},
            "labels": {"background": 0, **{name: i + 1 for i, name in enumerate(source.class_names)}},
            "numTraining": len(training), "file_ending": ".nii.gz", "name": target.name,
            "description": source.description, "reference": source.reference,
            "mesh_conversion": {"source": source.name, "spacing": spacing, "band_width_voxels": band_width,
                                "margin_voxels": margin_voxels, "sdf_sign": "negative inside",
                                "num_folds": len(splits), "skipped": report.skipped, **source.extra},
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        (tmp / "splits_final.json").write_text(json.dumps(splits, indent=2))
        (tmp / "conversion_report.json").write_text(report.to_json())
    if splits_copy is not None:
        atomic_write_text(splits_copy, json.dumps(splits, indent=2), overwrite)
        report.notes.append(f"splits_final.json written to {splits_copy}")
    else:
        report.notes.append(f"copy {target / 'splits_final.json'} to $nnUNet_preprocessed/{target.name}/ before "
                            "training: nnU-Net reads its folds from there (or pass the preprocessed folder to the "
                            "converter)")
    return report


def _check_num_folds(source: MeshSource, num_folds: int | None) -> None:
    """Refuse, before reading, a number of folds that the source's groups cannot fill."""
    if num_folds is None:
        return
    groups = {c.group for c in source.cases if not c.test}
    if num_folds < 1 or num_folds > len(groups):
        raise ValueError(f"{num_folds} folds requested, but {source.name} has {len(groups)} training "
                         f"{_group_word(source)}: choose --folds between 1 and {len(groups)}")


def _group_word(source: MeshSource) -> str:
    return "patients" if source.name.startswith("ACDC") else "groups of cases"


def _median_spacing(meshes: list[LabelledMesh], grid_size: int, margin_voxels: int, report: ConversionReport) -> float:
    """Spacing at which the median mesh's longest side spans ``grid_size`` voxels, margins included."""
    longest = float(np.median([np.ptp(m.vertices, axis=0).max() for m in meshes]))
    spacing = longest / (grid_size - 1 - 2 * margin_voxels)
    report.notes.append(f"voxel spacing {spacing:.6g} (median longest side {longest:.6g} over "
                        f"{grid_size - 1 - 2 * margin_voxels} voxels)")
    return spacing


def _write_cases(folder: Path, meshes: list[tuple[MeshCase, LabelledMesh]], class_names: tuple[str, ...],
                 spacing: float, margin_voxels: int, band_width: float, report: ConversionReport) -> None:
    """``images``/``labels``/``meshes`` ``Tr`` (``Ts`` for test cases) of every mesh, with progress."""
    from tqdm import tqdm

    suffixes = {"Ts" if case.test else "Tr" for case, _ in meshes}
    for suffix in suffixes:
        for sub in ("images", "labels", "meshes"):
            (folder / f"{sub}{suffix}").mkdir()
    for case, mesh in tqdm(meshes, desc="signed distance volumes", unit="case"):
        grid = compute_sdf_grid(mesh.vertices, mesh.faces, spacing, margin=margin_voxels * spacing)
        labels = band_labels(mesh, grid, band_width)
        missing = [name for c, name in enumerate(class_names, start=1) if not np.any(labels == c)]
        if missing and not case.test:
            report.notes.append(f"{case.name}: no band voxel of class {', '.join(missing)}")
        suffix = "Ts" if case.test else "Tr"
        write_nifti(folder / f"images{suffix}" / f"{case.name}_0000.nii.gz", grid.values, grid.spacing, grid.origin)
        write_nifti(folder / f"labels{suffix}" / f"{case.name}.nii.gz", labels, grid.spacing, grid.origin)
        mesh.save(folder / f"meshes{suffix}" / f"{case.name}.npz")
        report.written.append(case.name)


def make_splits(source: MeshSource, names: list[str], groups: list[str], num_folds: int | None = None,
                seed: int = 0, report: ConversionReport | None = None) -> list[dict]:
    """nnU-Net's ``splits_final.json`` for the converted training cases ``names`` (with their ``groups``).

    - ``num_folds=None`` and official folds (IntrA): those folds restricted to the converted cases; a fold
      left empty is dropped (its official number is noted).
    - Otherwise ``num_folds`` (default ``DEFAULT_NUM_FOLDS``) group-wise folds; with fewer groups than folds,
      as many folds as there are groups. A single fold trains on every case and validates on its own (what
      nnU-Net's fold ``all`` does).

    Every reduction is a ``UserWarning`` and a note in ``report`` that says what was written and why; nothing
    here raises after the cases were read.
    """
    notes: list[str] = []
    folds: list[list[str]] = []
    if not names:
        notes.append("no training case: splits_final.json holds no fold")
    elif num_folds is None and source.folds is not None:
        known = set(names)
        folds = [[n for n in fold if n in known] for fold in source.folds]
        dropped = sorted({n for fold in source.folds for n in fold} - known)
        if dropped:
            notes.append(f"left out of the folds (not converted): {', '.join(dropped)}")
        unassigned = sorted(known - {n for fold in folds for n in fold})
        if unassigned:
            notes.append(f"in no official fold (never trained on): {', '.join(unassigned)}")
        empty = [k for k, fold in enumerate(folds) if not fold]
        folds = [fold for fold in folds if fold]
        if not folds:
            notes.append("no official fold holds a converted case: group-wise folds instead")
        elif empty:
            notes.append(f"official folds {empty} have no converted case and were dropped: {len(folds)} folds "
                         f"written (nnU-Net folds 0..{len(folds) - 1})")
    if names and not folds:
        requested = DEFAULT_NUM_FOLDS if num_folds is None else num_folds
        available = len(set(groups))
        k = min(requested, available)
        if k < requested:
            notes.append(f"{available} {_group_word(source)} cannot fill {requested} folds: wrote {k} folds "
                         f"({'the default' if num_folds is None else 'requested'} {requested}; choose with "
                         f"--folds N / num_folds, N <= {available})")
        folds = [list(names)] if k == 1 else grouped_folds(names, groups, k, seed)
    if len(folds) == 1:
        notes.append("one fold only: fold 0 trains and validates on the same cases (like nnU-Net's fold 'all'); "
                     "its validation scores are not held-out scores")
    for note in notes:
        warnings.warn(note, stacklevel=2)
    if report is not None:
        report.notes += notes
    if len(folds) == 1:
        return [{"train": sorted(names), "val": sorted(folds[0])}]
    return [{"train": sorted(n for j, fold in enumerate(folds) if j != k for n in fold), "val": sorted(fold)}
            for k, fold in enumerate(folds)]
