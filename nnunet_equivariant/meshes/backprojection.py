"""Predictions back on the mesh: nnU-Net probabilities or patch-classifier scores for every vertex.

nnU-Net (``nnUNetv2_predict --save_probabilities``) writes ``CASE.npz`` with ``probabilities`` of shape
``(C, z, y, x)`` (SimpleITK's array order of the input image, background first) and ``CASE.pkl`` whose
``sitk_stuff`` holds that image's spacing, origin and direction. ``vertex_probabilities`` interpolates them
trilinearly at the vertices' physical positions; a vertex's class is the most probable *foreground*
channel (vertices lie on the surface, inside the labelled band, so background is not a vertex class).

``map_nnunet_predictions`` does this for a folder of predictions against the meshes a conversion stored
(``meshesTr``/``meshesTs``), writes each labelled surface as ``.ply`` and ``.vtu`` (point data ``label``,
``true_label``, ``p_<class>``) and the per-vertex metrics (``nnunet_equivariant.meshes.metrics``).
"""
from __future__ import annotations

import csv
import io
import json
import pickle
from pathlib import Path

import numpy as np
import torch

from nnunet_equivariant.io import atomic_folder
from nnunet_equivariant.meshes.labelled_mesh import LabelledMesh
from nnunet_equivariant.meshes.mesh_io import write_labelled_mesh
from nnunet_equivariant.meshes.metrics import summarize, vertex_metrics
from nnunet_equivariant.meshes.sdf import SdfGrid, extract_patches, trilinear

__all__ = ["read_nnunet_probabilities", "vertex_probabilities", "classify_vertices", "map_nnunet_predictions",
           "write_mesh_predictions"]


def read_nnunet_probabilities(npz_path: str | Path) -> tuple[np.ndarray, dict]:
    """Probabilities ``(C, x, y, z)`` of one nnU-Net prediction and the image geometry.

    Returns ``(probabilities, {"spacing", "origin", "direction" (3x3)})``.
    """
    npz_path = Path(npz_path)
    pkl_path = npz_path.with_suffix(".pkl")
    if not pkl_path.is_file():
        raise FileNotFoundError(f"{pkl_path} does not exist (nnUNetv2_predict --save_probabilities writes it "
                                f"beside {npz_path.name})")
    with np.load(npz_path) as z:
        if "probabilities" not in z:
            raise ValueError(f"{npz_path}: no 'probabilities' array (not an nnU-Net probability file)")
        probabilities = z["probabilities"]
    with open(pkl_path, "rb") as fh:
        properties = pickle.load(fh)
    if "sitk_stuff" not in properties:
        raise ValueError(f"{pkl_path}: no 'sitk_stuff'; only SimpleITK-read images are supported")
    geo = properties["sitk_stuff"]
    if probabilities.ndim != 4:
        raise ValueError(f"{npz_path}: expected probabilities (C, z, y, x), got shape {probabilities.shape}")
    return np.ascontiguousarray(probabilities.transpose(0, 3, 2, 1), dtype=np.float32), {
        "spacing": np.asarray(geo["spacing"], dtype=np.float64),
        "origin": np.asarray(geo["origin"], dtype=np.float64),
        "direction": np.asarray(geo["direction"], dtype=np.float64).reshape(3, 3)}


def vertex_probabilities(probabilities: np.ndarray, geometry: dict, points: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of ``(C, x, y, z)`` probabilities at ``(V, 3)`` physical points -> ``(C, V)``.

    Index ``u`` of a point ``p``: ``u = direction^T (p - origin) / spacing`` (orthonormal direction).
    """
    u = ((np.asarray(points, dtype=np.float64) - geometry["origin"]) @ geometry["direction"]) / geometry["spacing"]
    return trilinear(probabilities, np.zeros(3), np.ones(3), u)


@torch.no_grad()
def classify_vertices(model: torch.nn.Module, mesh: LabelledMesh, grid: SdfGrid, side: float, n: int = 16, *,
                      batch_size: int = 512, device: str | torch.device = "cpu") -> np.ndarray:
    """Scores ``(L, C)`` of a patch classifier for every labelled vertex (patches cut from ``grid``)."""
    model.eval()
    scores = []
    for start in range(0, mesh.num_labelled, batch_size):
        patches = extract_patches(grid, mesh.labelled_vertices[start:start + batch_size], side, n)
        scores.append(model(patches.to(device)).float().cpu())
    return torch.cat(scores).numpy()


def write_mesh_predictions(folder: Path, mesh: LabelledMesh, predicted: np.ndarray, scores: np.ndarray,
                           formats=(".ply", ".vtu")) -> None:
    """Write the source surface (original vertices and faces) with predicted and true labels per vertex."""
    point_data = {"label": predicted, "true_label": mesh.labels}
    point_data.update({f"p_{name}": scores[:, c].astype(np.float32) for c, name in enumerate(mesh.class_names)})
    for suffix in formats:
        write_labelled_mesh(folder / f"{mesh.name}{suffix}", mesh.labelled_vertices,
                            mesh.faces[: mesh.num_original_faces], point_data)


def write_metrics(folder: Path, per_case: dict[str, dict], class_names: tuple[str, ...]) -> dict:
    """``metrics.csv`` (one row per mesh) and ``summary.json`` (IntrA-style means); returns the summary."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["case", "accuracy", *[f"iou_{c}" for c in class_names], *[f"dsc_{c}" for c in class_names]])
    for name, m in per_case.items():
        writer.writerow([name, m["accuracy"], *m["iou"], *m["dsc"]])
    (folder / "metrics.csv").write_text(buf.getvalue())
    summary = summarize(list(per_case.values()), class_names)
    summary["per_case"] = per_case
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def map_nnunet_predictions(prediction_folder: str | Path, mesh_folder: str | Path, output_folder: str | Path, *,
                           overwrite: bool = False) -> dict:
    """Label every mesh vertex from nnU-Net's probabilities and score it against the mesh's labels.

    Args:
        prediction_folder: output of ``nnUNetv2_predict ... --save_probabilities`` (``CASE.npz`` + ``.pkl``).
        mesh_folder: the converted dataset's ``meshesTr`` or ``meshesTs`` (``CASE.npz``).
        output_folder: receives ``CASE.ply``, ``CASE.vtu``, ``metrics.csv``, ``summary.json``.
    Returns:
        The summary (means over meshes, and ``per_case``).
    """
    from tqdm import tqdm

    prediction_folder, mesh_folder = Path(prediction_folder), Path(mesh_folder)
    predictions = sorted(p for p in prediction_folder.glob("*.npz"))
    if not predictions:
        raise FileNotFoundError(f"no .npz probability files in {prediction_folder} (predict with "
                                "--save_probabilities)")
    missing = [p.stem for p in predictions if not (mesh_folder / f"{p.stem}.npz").is_file()]
    if missing:
        raise FileNotFoundError(f"no mesh for predictions {missing} in {mesh_folder}")
    per_case = {}
    class_names: tuple[str, ...] = ()
    with atomic_folder(output_folder, overwrite) as tmp:
        for pred in tqdm(predictions, desc="labelling mesh vertices", unit="case"):
            mesh = LabelledMesh.load(mesh_folder / f"{pred.stem}.npz")
            probabilities, geometry = read_nnunet_probabilities(pred)
            if probabilities.shape[0] != len(mesh.class_names) + 1:
                raise ValueError(f"{pred}: {probabilities.shape[0]} channels for background + "
                                 f"{len(mesh.class_names)} mesh classes {list(mesh.class_names)}")
            scores = vertex_probabilities(probabilities, geometry, mesh.labelled_vertices)[1:].T  # (L, C)
            predicted = np.argmax(scores, axis=1)
            write_mesh_predictions(tmp, mesh, predicted, scores)
            per_case[mesh.name] = vertex_metrics(predicted, mesh.labels, len(mesh.class_names))
            class_names = mesh.class_names
        summary = write_metrics(tmp, per_case, class_names)
    return summary
