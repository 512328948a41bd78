"""IntrA (Yang et al., CVPR 2020) annotated aneurysm segments, read as closed labelled meshes.

The layout (github.com/intra3d2019/IntrA) is followed exactly::

    IntrA/annotated/ad/AN1-_norm.ad        one point per line: x y z nx ny nz label
                                           (0 vessel, 1 aneurysm, 2 aneurysm neck)
    IntrA/annotated/obj/AN1_full.obj       the same vertices in the same order, faces in the groups
                                           ``aneurysm`` and ``others`` (faces may be ``v``, ``v/vt``, ``v//vn``)
    IntrA/fileSplit/seg/annSplit_0.txt     the official five folds, one ``annotated/ad/...ad`` path per line
    ...  annSplit_4.txt

As in IntrA's own loaders, the neck (label 2) is merged into the aneurysm, giving the classes
``("vessel", "aneurysm")``. The segments are open tubes; ``read_intra_case`` closes them with
``close_holes``, keeping every original vertex first so the labels map 1:1.

The ``.ad`` points are matched to the ``.obj`` vertices **by coordinates**, not by position in the file:
real ``.obj`` files can hold vertices that no face uses, e.g. a duplicate of another vertex (1740 ``.obj``
vertices for 1739 ``.ad`` points). Each ``.ad`` point takes the ``.obj`` vertex nearest to it, which must lie
within ``MATCH_TOLERANCE`` times the mesh's bounding-box diagonal (+ 1e-6: the files store 6 decimals);
every ``.obj`` vertex that a face uses must match an ``.ad`` point the same way (a duplicate matches the
point of its twin). ``.obj`` vertices that no face uses are dropped, and so are faces that collapse
when duplicates merge. A case is skipped (``ValueError`` naming both files) only when
a point has no vertex or a face's vertex has no point. Then every vertex that only ``aneurysm`` faces use
must be labelled aneurysm or neck in the ``.ad`` (and ``others``-only vertices vessel).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_equivariant.meshes.hole_closing import close_holes
from nnunet_equivariant.meshes.labelled_mesh import LabelledMesh

__all__ = ["INTRA_CLASSES", "IntraCase", "read_ad", "read_obj", "read_intra_case", "find_intra_cases",
           "read_intra_folds", "match_ad_to_obj", "MATCH_TOLERANCE"]

INTRA_CLASSES = ("vessel", "aneurysm")
MATCH_TOLERANCE = 1e-4  # of the bounding-box diagonal: .ad and .obj coordinates agree to file rounding


@dataclass(frozen=True)
class IntraCase:
    """One annotated segment: ``name`` (``AN1``), its ``.ad`` and its ``.obj`` file."""

    name: str
    ad: Path
    obj: Path

    def read(self) -> LabelledMesh:
        return read_intra_case(self.ad, self.obj, self.name)


def read_ad(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an IntrA ``.ad`` file: ``(points (n, 3), normals (n, 3), labels (n,))`` with labels in {0, 1, 2}."""
    path = Path(path)
    try:
        data = np.loadtxt(path, ndmin=2)
    except ValueError as e:
        raise ValueError(f"{path}: not an IntrA .ad file ({e})") from None
    if data.shape[0] == 0 or data.shape[1] != 7:
        raise ValueError(f"{path}: expected lines 'x y z nx ny nz label', got {data.shape[1]} columns")
    labels = data[:, 6]
    if not np.all(labels == np.round(labels)):
        raise ValueError(f"{path}: labels must be integers")
    labels = labels.astype(np.int64)
    unknown = sorted(set(np.unique(labels).tolist()) - {0, 1, 2})
    if unknown:
        raise ValueError(f"{path}: unknown labels {unknown} (IntrA uses 0 vessel, 1 aneurysm, 2 neck)")
    return data[:, :3], data[:, 3:6], labels


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a Wavefront ``.obj`` with IntrA's face groups.

    Returns:
        ``(vertices (V, 3), faces (F, 3), aneurysm_face (F,) bool)``; polygons are fan-triangulated.
        A group name starting with ``a`` is the aneurysm, with ``o`` the rest (as IntrA's viewer reads
        them); faces in any other group, or in none, raise ``ValueError``.
    """
    path = Path(path)
    vertices: list[list[float]] = []
    faces: list[tuple[int, int, int]] = []
    aneurysm: list[bool] = []
    group: bool | None = None
    group_name = None
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if parts[0] == "v":
                vertices.append([float(x) for x in parts[1:4]])
            elif parts[0] == "g":
                group_name = " ".join(parts[1:])
                group = {"a": True, "o": False}.get(group_name[:1].lower())
            elif parts[0] == "f":
                if group is None:
                    raise ValueError(f"{path}:{lineno}: face outside the 'aneurysm'/'others' groups "
                                     f"(group {group_name!r})")
                idx = []
                for token in parts[1:]:
                    i = int(token.split("/")[0])
                    idx.append(i - 1 if i > 0 else len(vertices) + i)
                for k in range(1, len(idx) - 1):
                    faces.append((idx[0], idx[k], idx[k + 1]))
                    aneurysm.append(group)
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        raise ValueError(f"{path}: no faces")
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"{path}: face indices outside the {len(v)} vertices")
    return v, f, np.asarray(aneurysm, dtype=bool)


def read_intra_case(ad: str | Path, obj: str | Path, name: str | None = None) -> LabelledMesh:
    """Read one annotated IntrA segment, match ``.ad`` points to ``.obj`` vertices and close its open ends.

    The mesh's original vertices are the ``.ad`` points, in ``.ad`` order (see the module docstring).
    """
    ad, obj = Path(ad), Path(obj)
    points, _, ad_labels = read_ad(ad)
    obj_vertices, obj_faces, aneurysm_face = read_obj(obj)
    point_of_vertex = match_ad_to_obj(points, obj_vertices, obj_faces, f"{ad} and {obj}")
    faces = point_of_vertex[obj_faces]
    kept = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    faces, aneurysm_face = faces[kept], aneurysm_face[kept]
    vertices = points.copy()
    matched = point_of_vertex >= 0
    vertices[point_of_vertex[matched]] = obj_vertices[matched]  # the .obj's coordinates, in .ad order
    in_aneurysm = np.zeros(len(vertices), dtype=bool)
    in_others = np.zeros(len(vertices), dtype=bool)
    in_aneurysm[faces[aneurysm_face].ravel()] = True
    in_others[faces[~aneurysm_face].ravel()] = True
    wrong = (in_aneurysm & ~in_others & (ad_labels == 0)) | (in_others & ~in_aneurysm & (ad_labels > 0))
    if wrong.any():
        raise ValueError(f"{ad} and {obj} disagree: {int(wrong.sum())} vertices have a label that contradicts "
                         "the .obj face groups")
    closed_v, closed_f = close_holes(vertices, faces, name=str(obj))
    labels = np.where(ad_labels == 2, 1, ad_labels)  # the neck belongs to the aneurysm
    return LabelledMesh(name=name or _case_name(ad), vertices=closed_v, faces=closed_f, labels=labels,
                        class_names=INTRA_CLASSES, num_original_faces=len(faces))


def match_ad_to_obj(points: np.ndarray, obj_vertices: np.ndarray, obj_faces: np.ndarray,
                    name: str = "mesh") -> np.ndarray:
    """The ``.ad`` point of every ``.obj`` vertex, ``(V,)`` int64, -1 for a dropped vertex (module docstring).

    Raises:
        ValueError: a point without a vertex, or a vertex used by a face without a point, within the tolerance.
    """
    from scipy.spatial import cKDTree

    scale = float(np.linalg.norm(np.ptp(np.concatenate([points, obj_vertices]), axis=0)))
    tolerance = MATCH_TOLERANCE * scale + 1e-6
    distance, _ = cKDTree(obj_vertices).query(points, distance_upper_bound=tolerance)
    lost = np.flatnonzero(np.isinf(distance))
    if len(lost):
        raise ValueError(f"{name} disagree: {len(lost)} of {len(points)} .ad points have no .obj vertex within "
                         f"{tolerance:.3g} (first: point {lost[0]} at {points[lost[0]].tolist()})")
    distance, to_point = cKDTree(points).query(obj_vertices, distance_upper_bound=tolerance)
    to_point = np.where(np.isinf(distance), -1, to_point).astype(np.int64)
    used = np.zeros(len(obj_vertices), dtype=bool)
    used[obj_faces.ravel()] = True
    orphans = np.flatnonzero(used & (to_point < 0))
    if len(orphans):
        raise ValueError(f"{name} disagree: {len(orphans)} .obj vertices used by faces have no .ad point within "
                         f"{tolerance:.3g} (first: vertex {orphans[0] + 1} at {obj_vertices[orphans[0]].tolist()})")
    return np.where(used, to_point, -1)


def _case_name(ad: Path) -> str:
    """``AN193-1-_norm.ad`` -> ``AN193-1``."""
    stem = ad.name[: -len(".ad")] if ad.name.endswith(".ad") else ad.stem
    return stem[: -len("-_norm")] if stem.endswith("-_norm") else stem


def find_intra_cases(root: str | Path) -> list[IntraCase]:
    """The annotated segments under an IntrA folder (``root/annotated/ad/*.ad``), sorted by name.

    The ``.obj`` of ``ANk-_norm.ad`` is ``annotated/obj/ANk_full.obj``; a missing one is reported when the
    case is read, not here, so that one missing file does not stop a conversion.
    """
    root = Path(root)
    ad_dir = root / "annotated" / "ad"
    if not ad_dir.is_dir():
        raise FileNotFoundError(f"{ad_dir} does not exist: expected IntrA's layout annotated/ad/*.ad")
    cases = []
    for ad in sorted(ad_dir.glob("*.ad")):
        name = _case_name(ad)
        cases.append(IntraCase(name, ad, root / "annotated" / "obj" / f"{name}_full.obj"))
    if not cases:
        raise FileNotFoundError(f"no .ad files in {ad_dir}")
    return cases


def read_intra_folds(root: str | Path, split_dir: str | Path | None = None) -> list[list[str]]:
    """The official five folds, ``fileSplit/seg/annSplit_{0..4}.txt``, as lists of case names.

    Fold ``k`` is the test set of cross-validation split ``k``; the other four folds are its training set.
    """
    split_dir = Path(split_dir) if split_dir is not None else Path(root) / "fileSplit" / "seg"
    folds = []
    for k in range(5):
        path = split_dir / f"annSplit_{k}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: IntrA's official folds are "
                                    "fileSplit/seg/annSplit_0.txt ... annSplit_4.txt")
        folds.append([_case_name(Path(line.strip())) for line in path.read_text().splitlines() if line.strip()])
    return folds
