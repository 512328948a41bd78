"""ACDC-S: labelled heart surfaces from ACDC label volumes (marching cubes, edge labelling, Taubin smoothing).

The surface is the boundary of the union of myocardium (2) and RV cavity (1), extracted by marching cubes on
the voxel grid and mapped to physical space with the image's spacing, direction and origin. Each raw
vertex lies on one grid edge between a voxel inside the union and one outside; the pair of labels on that
edge gives its class:

=====================================  ======================
inside / outside voxel                 class
=====================================  ======================
myocardium (2) / background (0)        0 ``epicardium``
myocardium (2) / LV cavity (3)         1 ``lv_endocardium``
RV cavity (1) / background (0)         2 ``rv_endocardium``
=====================================  ======================

Any other pair (RV cavity touching LV cavity) raises ``ValueError``. Lewiner's marching cubes also puts a
vertex at the centre of some ambiguous cubes; it takes the most common class of that cube's
surface-crossing edges. Taubin smoothing then moves the vertices without changing their order or the
faces, so the labels stay attached.

Convention
----------
Label arrays here are indexed ``[i, j, k]`` = SimpleITK index ``(i, j, k)``: the transpose of
``sitk.GetArrayFromImage``. Physical position of index ``u``: ``origin + direction @ (spacing * u)``.
"""
from __future__ import annotations

import numpy as np

from nnunet_equivariant.meshes.hole_closing import check_closed
from nnunet_equivariant.meshes.labelled_mesh import LabelledMesh

__all__ = ["ACDC_S_CLASSES", "labelled_surface", "taubin_smooth", "acdc_surface"]

ACDC_S_CLASSES = ("epicardium", "lv_endocardium", "rv_endocardium")
_EDGE_CLASS = {(2, 0): 0, (2, 3): 1, (1, 0): 2}  # (inside label, outside label) -> class


def labelled_surface(labels: np.ndarray, name: str = "labels") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marching cubes of the union of labels 1 and 2, each vertex classified by its grid edge.

    Args:
        labels: ``(nx, ny, nz)`` integer ACDC labels, index order (see Convention).
    Returns:
        ``(vertices (V, 3) in continuous index coordinates, faces (F, 3), classes (V,))``; the surface is
        closed (the volume is padded with background), faces wound outwards in index space.
    """
    import trimesh
    from skimage.measure import marching_cubes

    padded = np.pad(np.asarray(labels), 1)
    inside = np.isin(padded, (1, 2))
    if not inside.any():
        raise ValueError(f"{name}: no myocardium or RV cavity voxels")
    verts, faces, _, _ = marching_cubes(inside.astype(np.float32), level=0.5, allow_degenerate=False)
    # A binary field interpolated at 0.5 puts each vertex at the midpoint of a grid edge (one half-integer
    # coordinate). Lewiner's method also adds a vertex at the centre of some ambiguous cubes (three
    # half-integer coordinates); it takes the most common class of the cube's surface-crossing edges.
    twice = np.rint(2 * verts).astype(np.int64)
    odd = (twice % 2).sum(axis=1)
    if not np.allclose(2 * verts, twice, atol=1e-4) or np.any((odd != 1) & (odd != 3)):
        raise ValueError(f"{name}: marching cubes produced a vertex that is neither on a grid edge nor at a "
                         "cube centre")
    classes = np.full(len(verts), -1, dtype=np.int64)
    on_edge = odd == 1
    axis = np.argmax(twice[on_edge] % 2, axis=1)
    low = twice[on_edge] // 2
    high = low.copy()
    high[np.arange(len(high)), axis] += 1
    classes[on_edge] = _edge_classes(padded[tuple(low.T)], padded[tuple(high.T)], name)
    for v in np.flatnonzero(~on_edge):
        corner = twice[v] // 2  # lowest corner of the cube
        cube = padded[corner[0]:corner[0] + 2, corner[1]:corner[1] + 2, corner[2]:corner[2] + 2]
        pairs = [(cube[tuple(a)], cube[tuple(b)]) for a, b in _CUBE_EDGES]
        crossing = [(a, b) for a, b in pairs if (a in (1, 2)) != (b in (1, 2))]
        edge_cls = _edge_classes(np.array([a for a, _ in crossing]), np.array([b for _, b in crossing]), name)
        classes[v] = np.bincount(edge_cls).argmax()
    faces = faces.astype(np.int64)
    if trimesh.Trimesh(verts, faces, process=False, validate=False).volume < 0:
        faces = faces[:, ::-1].copy()
    return verts - 1.0, faces, classes


_CUBE_EDGES = [((i, j, k), (i2, j2, k2)) for i, j, k in np.ndindex(2, 2, 2) for i2, j2, k2 in np.ndindex(2, 2, 2)
               if abs(i - i2) + abs(j - j2) + abs(k - k2) == 1 and (i, j, k) < (i2, j2, k2)]


def _edge_classes(label_a: np.ndarray, label_b: np.ndarray, name: str) -> np.ndarray:
    """Class of each surface-crossing grid edge from the labels at its two ends (either order)."""
    a_inside = np.isin(label_a, (1, 2))
    inner = np.where(a_inside, label_a, label_b)
    outer = np.where(a_inside, label_b, label_a)
    classes = np.full(len(inner), -1, dtype=np.int64)
    for (lab_in, lab_out), cls in _EDGE_CLASS.items():
        classes[(inner == lab_in) & (outer == lab_out)] = cls
    if np.any(classes < 0):
        pairs = sorted({(int(i), int(o)) for i, o in zip(inner[classes < 0], outer[classes < 0])})
        raise ValueError(f"{name}: surface between labels {pairs} (inside, outside); only myocardium/"
                         "background, myocardium/LV cavity and RV cavity/background are expected")
    return classes


def taubin_smooth(vertices: np.ndarray, faces: np.ndarray, iterations: int = 10, lamb: float = 0.5,
                  mu: float = -0.53) -> np.ndarray:
    """Taubin's lambda/mu smoothing: ``iterations`` pairs of steps with uniform weights (trimesh's
    ``filter_taubin``, which alternates the two steps and takes ``nu = -mu``); vertex order is kept."""
    import trimesh

    mesh = trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), faces, process=False, validate=False)
    trimesh.smoothing.filter_taubin(mesh, lamb=lamb, nu=-mu, iterations=2 * iterations)
    return np.asarray(mesh.vertices, dtype=np.float64)


def acdc_surface(image, *, name: str = "labels", smoothing_iterations: int = 10) -> LabelledMesh:
    """The labelled ACDC-S surface of an ACDC label image (``sitk.Image``), in physical coordinates (mm)."""
    import SimpleITK as sitk

    labels = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    vertices_idx, faces, classes = labelled_surface(labels, name)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    vertices = origin + (vertices_idx * spacing) @ direction.T
    if np.linalg.det(direction) < 0:
        faces = faces[:, ::-1].copy()  # an improper direction mirrors the surface: keep normals outwards
    vertices = taubin_smooth(vertices, faces, smoothing_iterations)
    check_closed(vertices, faces, name)
    return LabelledMesh(name=name, vertices=vertices, faces=faces, labels=classes, class_names=ACDC_S_CLASSES,
                        num_original_faces=len(faces))
