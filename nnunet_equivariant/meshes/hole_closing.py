"""Close the open ends of a surface mesh so that its signed distance is defined.

IntrA's vessel segments are open tubes. ``close_holes`` caps every boundary loop and keeps every original
vertex first and in its original order, so per-vertex labels still map 1:1. The result is watertight
(each edge shared by exactly two faces), consistently wound and encloses a positive volume; anything else
is a ``ValueError`` naming the mesh.

Each loop is capped by a fan around its centroid (one new vertex), which gives well-shaped triangles on the
near-planar, near-circular loops of cut vessels and never joins two loop vertices (so never makes an edge
non-manifold). When the loop, seen in its best-fit plane, is not star-shaped around the centroid, it is
ear-clipped in that plane instead (no new vertex, no diagonal that is already a mesh edge); a loop that is
not a simple polygon in that plane cannot be capped and raises.

The paper used MeshLab's "close holes" (GPL-3 through pymeshlab); this closer is the package's own, so the
default install stays free of GPL code. trimesh's ``repair.fill_holes`` only closes holes of three or four
edges, and its ``outline`` loses the half-edge direction the caps' winding needs, hence the loops and caps
here; the checks and the winding repair are trimesh's.
"""
from __future__ import annotations

import numpy as np
import trimesh

__all__ = ["close_holes", "boundary_loops", "check_closed"]


def boundary_loops(faces: np.ndarray, name: str = "mesh") -> list[np.ndarray]:
    """Boundary loops of an edge-manifold triangle mesh, each in the direction of its faces' half-edges.

    Args:
        faces: ``(F, 3)`` vertex indices.
    Returns:
        One int64 array of vertex indices per loop; consecutive entries ``u, v`` are a half-edge ``u -> v``
        of an existing face whose opposite half-edge is missing.
    Raises:
        ValueError: an edge shared by more than two faces, a half-edge used twice (inconsistent winding),
            or a vertex where two boundary loops touch.
    """
    faces = np.asarray(faces, dtype=np.int64)
    half = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    if len(half) == 0:
        return []
    und = np.sort(half, axis=1)
    _, edge_count = np.unique(und, axis=0, return_counts=True)
    if edge_count.max() > 2:
        raise ValueError(f"{name}: {int((edge_count > 2).sum())} edges are shared by more than two faces "
                         "(non-manifold); cannot close the surface")
    directed, directed_count = np.unique(half, axis=0, return_counts=True)
    if directed_count.max() > 1:
        raise ValueError(f"{name}: faces are not consistently wound ({int((directed_count > 1).sum())} "
                         "half-edges used twice)")
    # a half-edge is on the boundary when its opposite does not exist
    key = directed[:, 0] * (faces.max() + 1) + directed[:, 1]
    opposite = directed[:, 1] * (faces.max() + 1) + directed[:, 0]
    boundary = directed[~np.isin(opposite, key)]
    nxt: dict[int, int] = {}
    for u, v in boundary.tolist():
        if u in nxt:
            raise ValueError(f"{name}: two boundary loops touch at vertex {u}; cannot close the surface")
        nxt[u] = v
    loops = []
    while nxt:
        start, _ = nxt.popitem()
        loop = [start]
        # the popped half-edge is start -> v; follow until we are back at start
        v = _
        while v != start:
            loop.append(v)
            if v not in nxt:
                raise ValueError(f"{name}: boundary at vertex {v} does not form a closed loop")
            v = nxt.pop(v)
        loops.append(np.array(loop, dtype=np.int64))
    return loops


def _plane_coordinates(points: np.ndarray) -> np.ndarray:
    """Project ``(n, 3)`` points onto their best-fit plane: ``(n, 2)`` coordinates."""
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def _signed_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _segments_cross(p1, p2, q1, q2) -> bool:
    def orient(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    d1, d2 = orient(q1, q2, p1), orient(q1, q2, p2)
    d3, d4 = orient(p1, p2, q1), orient(p1, p2, q2)
    return d1 * d2 < 0 and d3 * d4 < 0


def _is_simple(poly: np.ndarray) -> bool:
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue
            if _segments_cross(a, b, poly[j], poly[(j + 1) % n]):
                return False
    return True


def _cross(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """z of ``(q - p) x (r - p)`` for broadcastable 2D point arrays."""
    return (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])


def _angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Angle between ``-u`` and ``v`` (the corner angle of consecutive edges ``u``, ``v``)."""
    cos = -(u * v).sum(axis=1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1) + 1e-300)
    return np.arccos(np.clip(cos, -1, 1))


def _ear_clip(poly: np.ndarray, ids: np.ndarray, edges: set[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Triangulate a simple counter-clockwise polygon by clipping its best-shaped ear each step.

    An ear ``(a, b, c)`` is valid when its corner at ``b`` is convex (or straight), no other polygon vertex
    lies in it and its new edge ``a - c`` is not already an edge of the mesh (that would make the edge
    non-manifold: a ragged cut often has such chords). Among valid ears the one with the largest smallest
    angle is cut. Returns position triples into ``poly``; ``edges`` (undirected vertex-id pairs) is updated.
    """
    idx = list(range(len(poly)))
    tris = []
    tol = 1e-12 * float(np.ptp(poly, axis=0).max()) ** 2
    while len(idx) > 3:
        prev, nxt = np.roll(idx, 1), np.roll(idx, -1)
        a, b, c = poly[prev], poly[idx], poly[nxt]
        convex = _cross(a, b, c) >= -tol  # collinear corners may be cut too
        # (ears, vertices): strictly inside the ear triangle, the ear's own corners excluded
        inside = (_cross(a[:, None], b[:, None], b[None]) > 0) & (_cross(b[:, None], c[:, None], b[None]) > 0) & \
                 (_cross(c[:, None], a[:, None], b[None]) > 0)
        k = np.arange(len(idx))
        own = (k[:, None] == k[None]) | (np.roll(k, 1)[:, None] == k[None]) | (np.roll(k, -1)[:, None] == k[None])
        empty = ~np.any(inside & ~own, axis=1)
        new_edge = np.array([(min(u, v), max(u, v)) not in edges for u, v in zip(ids[prev], ids[nxt])])
        valid = convex & empty & new_edge
        if not valid.any():
            raise ValueError("no valid ear")
        ab, bc, ca = b - a, c - b, a - c
        quality = np.minimum(np.minimum(_angle(ca, ab), _angle(ab, bc)), _angle(bc, ca))  # smallest corner
        best = int(np.flatnonzero(valid)[np.argmax(quality[valid])])
        i0, i1, i2 = idx[best - 1], idx[best], idx[(best + 1) % len(idx)]
        tris.append((i0, i1, i2))
        edges.add((min(ids[i0], ids[i2]), max(ids[i0], ids[i2])))
        idx.pop(best)
    tris.append(tuple(idx))
    return tris


def _cap_loop(loop: np.ndarray, vertices: np.ndarray, new_index: int, edges: set[tuple[int, int]], name: str):
    """Cap one boundary loop. Returns ``(new_vertices (0|1, 3), faces (k, 3))``.

    The loop runs along existing half-edges ``u -> v``; cap faces must use ``v -> u``, so the cap polygon
    is the reversed loop.
    """
    cap = loop[::-1]
    if len(cap) == 3:
        return np.empty((0, 3)), cap[None, :].copy()
    pts = vertices[cap]
    poly = _plane_coordinates(pts)
    if _signed_area(poly) < 0:
        poly = poly * np.array([1.0, -1.0])  # view the plane from the side that makes the cap CCW
    centroid2 = poly.mean(axis=0)
    nxt = np.roll(poly, -1, axis=0)
    fan_area = (poly[:, 0] - centroid2[0]) * (nxt[:, 1] - centroid2[1]) - \
               (poly[:, 1] - centroid2[1]) * (nxt[:, 0] - centroid2[0])
    # A fan adds no edge between loop vertices, so it is always manifold; it is used unless it folds over
    # itself by more than 10 % of its area (near-coincident vertices of a ragged cut fold it a little).
    folded = -fan_area[fan_area < 0].sum() / max(fan_area[fan_area > 0].sum(), 1e-300)
    if folded <= 0.1:
        faces = np.stack([cap, np.roll(cap, -1), np.full(len(cap), new_index)], axis=1)
        return pts.mean(axis=0)[None, :], faces
    if not _is_simple(poly):
        raise ValueError(f"{name}: a hole with {len(loop)} boundary vertices is not a simple polygon in its "
                         "best-fit plane; cannot close it")
    try:
        tris = _ear_clip(poly, cap, edges)
    except ValueError as e:
        raise ValueError(f"{name}: cannot triangulate a hole with {len(loop)} boundary vertices ({e})") from None
    return np.empty((0, 3)), cap[np.array(tris, dtype=np.int64)]


def check_closed(vertices: np.ndarray, faces: np.ndarray, name: str = "mesh") -> None:
    """Raise ``ValueError`` unless the mesh is watertight, consistently wound and encloses a positive volume."""
    mesh = trimesh.Trimesh(vertices, faces, process=False, validate=False)
    if not mesh.is_watertight:
        raise ValueError(f"{name}: the closed mesh is not watertight")
    if not mesh.is_winding_consistent:
        raise ValueError(f"{name}: the closed mesh is not consistently wound")
    if not mesh.volume > 0:
        raise ValueError(f"{name}: the closed mesh encloses volume {mesh.volume:g} (must be positive)")


def close_holes(vertices: np.ndarray, faces: np.ndarray, *, name: str = "mesh") -> tuple[np.ndarray, np.ndarray]:
    """Cap every hole of a triangle mesh; original vertices stay first and in order.

    Args:
        vertices: ``(V, 3)`` coordinates.
        faces: ``(F, 3)`` vertex indices, edge-manifold; an inconsistent winding is repaired first.
        name: used in error messages (the file the mesh came from).
    Returns:
        ``(vertices (V + k, 3), faces (F + m, 3))``: the first ``V`` vertices and ``F`` faces are the input
        ones (faces possibly re-oriented as a whole so that normals point outwards).
    Raises:
        ValueError: the mesh cannot be closed into a watertight, consistently wound surface of positive volume.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    source = trimesh.Trimesh(vertices, faces, process=False, validate=False)
    if not source.is_winding_consistent:
        trimesh.repair.fix_winding(source)  # flips faces in place; vertices and face order are kept
        faces = np.asarray(source.faces, dtype=np.int64)
    new_v, new_f = _cap_loops(vertices, faces, name)
    out_v = np.concatenate([vertices, new_v]) if len(new_v) else vertices.copy()
    out_f = np.concatenate([faces, new_f]) if len(new_f) else faces.copy()
    if trimesh.Trimesh(out_v, out_f, process=False, validate=False).volume < 0:
        out_f = out_f[:, ::-1].copy()  # the source was wound inside-out: flip every face
    check_closed(out_v, out_f, name)
    return out_v, out_f


def _cap_loops(vertices, faces, name):
    new_vertices, new_faces = [], []
    next_index = len(vertices)
    edges = set(map(tuple, np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]),
                                   axis=1).tolist()))
    for loop in boundary_loops(faces, name):
        v, f = _cap_loop(loop, vertices, next_index, edges, name)
        next_index += len(v)
        new_vertices.append(v)
        new_faces.append(f)
    if not new_faces:
        return np.empty((0, 3)), np.empty((0, 3), dtype=np.int64)
    return np.concatenate(new_vertices), np.concatenate(new_faces)
