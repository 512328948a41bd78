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
  frames of an ACDC patient together). nnU-Net reads ``splits_final.json`` only from
  ``nnUNet_preprocessed/DatasetXXX_NAME/``: it is written there when ``preprocessed_root`` is given
  (``nnUNetv2_plan_and_preprocess`` keeps it), and always beside the raw dataset for reference.

Cases marked ``test`` (ACDC's ``testing`` patients) go to ``imagesTs``/``labelsTs``/``meshesTs``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nnunet_equivariant.atomic import atomic_folder, atomic_write_text, check_target
from nnunet_equivariant.meshes.conversion import ConversionReport, read_cases
from nnunet_equivariant.meshes.labelled_mesh import LabelledMesh
from nnunet_equivariant.meshes.sdf import SdfGrid, compute_sdf_grid, signed_distance
from nnunet_equivariant.meshes.sources import MeshSource, grouped_folds

__all__ = ["write_nnunet_dataset", "band_labels", "dataset_folder_name"]


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset id must be in 1..999, got {dataset_id}")
    if not name or "_" in name or "/" in name:
        raise ValueError(f"dataset name must be non-empty without '_' or '/', got {name!r}")
    return f"Dataset{int(dataset_id):03d}_{name}"


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


def _write_volume(path: Path, array: np.ndarray, grid: SdfGrid) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    img.SetSpacing((grid.spacing,) * 3)
    img.SetOrigin(tuple(float(o) for o in grid.origin))
    sitk.WriteImage(img, str(path), useCompression=True)


def _check_dataset_id(raw_root: Path, dataset_id: int, folder: str) -> None:
    clash = [p.name for p in raw_root.glob(f"Dataset{int(dataset_id):03d}_*") if p.name != folder]
    if clash:
        raise FileExistsError(f"dataset id {dataset_id} is already used by {clash[0]} in {raw_root}; "
                              "nnU-Net needs unique ids")


def write_nnunet_dataset(source: MeshSource, raw_root: str | Path, dataset_id: int, *,
                         dataset_name: str | None = None, spacing: float | None = None, grid_size: int = 128,
                         margin_voxels: int = 4, band_width: float = 1.5,
                         preprocessed_root: str | Path | None = None, num_folds: int = 5, seed: int = 0,
                         overwrite: bool = False) -> ConversionReport:
    """Write ``raw_root/DatasetXXX_NAME`` from a ``MeshSource`` (see module docstring).

    Args:
        spacing: voxel size of every case; default: the median case's longest side spans ``grid_size``
            voxels (margins included).
        band_width: half-thickness of the labelled surface band, in voxels.
        preprocessed_root: ``nnUNet_preprocessed``; when given, ``splits_final.json`` is also written to
            ``preprocessed_root/DatasetXXX_NAME/``.
        num_folds, seed: group-wise folds when the source has no official ones.
    Returns:
        The report (cases written and skipped with their errors).
    """
    from tqdm import tqdm

    raw_root = Path(raw_root)
    folder = dataset_folder_name(dataset_id, dataset_name or source.name)
    if raw_root.is_dir():
        _check_dataset_id(raw_root, dataset_id, folder)
    target = raw_root / folder
    check_target(target, overwrite)
    splits_targets = [target / "splits_final.json"]
    if preprocessed_root is not None:
        splits_targets.append(Path(preprocessed_root) / folder / "splits_final.json")
        check_target(splits_targets[-1], overwrite)
    if band_width <= 0 or margin_voxels < 1:
        raise ValueError(f"band_width must be > 0 and margin_voxels >= 1, got {band_width}, {margin_voxels}")

    report = ConversionReport(output=target)
    meshes = read_cases(source.cases, report)
    if not meshes:
        raise ValueError("no case could be read:\n" + report.summary())
    if spacing is None:
        longest = np.median([np.ptp(m.vertices, axis=0).max() for _, m in meshes])
        spacing = float(longest / (grid_size - 1 - 2 * margin_voxels))
        report.notes.append(f"voxel spacing {spacing:.6g} (median longest side {longest:.6g} over "
                            f"{grid_size - 1 - 2 * margin_voxels} voxels)")
    elif not spacing > 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    training = [c.name for c, _ in meshes if not c.test]
    splits = _splits(source, training, [c.group for c, _ in meshes if not c.test], num_folds, seed, report)

    with atomic_folder(target, overwrite) as tmp:
        for sub in ("imagesTr", "labelsTr", "meshesTr"):
            (tmp / sub).mkdir()
        if any(c.test for c, _ in meshes):
            for sub in ("imagesTs", "labelsTs", "meshesTs"):
                (tmp / sub).mkdir()
        for case, mesh in tqdm(meshes, desc="signed distance volumes", unit="case"):
            grid = compute_sdf_grid(mesh.vertices, mesh.faces, spacing, margin=margin_voxels * spacing)
            labels = band_labels(mesh, grid, band_width)
            present = set(np.unique(labels).tolist()) - {0}
            missing = [source.class_names[c - 1] for c in range(1, len(source.class_names) + 1) if c not in present]
            if missing and not case.test:
                report.notes.append(f"{case.name}: no band voxel of class {', '.join(missing)}")
            suffix = "Ts" if case.test else "Tr"
            _write_volume(tmp / f"images{suffix}" / f"{case.name}_0000.nii.gz", grid.values, grid)
            _write_volume(tmp / f"labels{suffix}" / f"{case.name}.nii.gz", labels, grid)
            mesh.save(tmp / f"meshes{suffix}" / f"{case.name}.npz")
            report.written.append(case.name)

        labels_json = {"background": 0, **{name: i + 1 for i, name in enumerate(source.class_names)}}
        dataset_json = {
            "channel_names": {"0": "noNorm"}, "labels": labels_json, "numTraining": len(training),
            "file_ending": ".nii.gz", "name": folder, "description": source.description,
            "reference": source.reference,
            "mesh_conversion": {"source": source.name, "spacing": spacing, "band_width_voxels": band_width,
                                "margin_voxels": margin_voxels, "sdf_sign": "negative inside",
                                "skipped": report.skipped, **source.extra},
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        splits_text = json.dumps(splits, indent=2)
        (tmp / "splits_final.json").write_text(splits_text)
        (tmp / "conversion_report.json").write_text(report.to_json())
    if len(splits_targets) > 1:
        atomic_write_text(splits_targets[1], splits_text, overwrite)
        report.notes.append(f"splits_final.json written to {splits_targets[1]}")
    else:
        report.notes.append(f"copy {splits_targets[0]} to $nnUNet_preprocessed/{folder}/ before training: nnU-Net "
                            "reads its folds from there (or pass the preprocessed folder to the converter)")
    return report


def _splits(source: MeshSource, training: list[str], groups: list[str], num_folds: int, seed: int,
            report: ConversionReport) -> list[dict]:
    """nnU-Net's ``splits_final.json``: the source's folds restricted to converted cases, else group folds."""
    if source.folds is None:
        folds = grouped_folds(training, groups, num_folds, seed)
    else:
        known = set(training)
        folds = [[n for n in fold if n in known] for fold in source.folds]
        dropped = sorted({n for fold in source.folds for n in fold} - known)
        if dropped:
            report.notes.append(f"left out of the folds (not converted): {', '.join(dropped)}")
        unassigned = sorted(known - {n for fold in folds for n in fold})
        if unassigned:
            report.notes.append(f"in no official fold (never trained on): {', '.join(unassigned)}")
    return [{"train": sorted(n for j, fold in enumerate(folds) if j != k for n in fold), "val": sorted(fold)}
            for k, fold in enumerate(folds)]
