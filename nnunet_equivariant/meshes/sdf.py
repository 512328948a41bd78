"""Signed distance of a closed surface: exact values on a grid, trilinear patches around vertices.

Convention
----------
- Signed distance is **negative inside** the surface and positive outside (the paper's convention and
  libigl's). trimesh's ``proximity.signed_distance`` uses the opposite sign (positive inside).
- Exact values come from libigl (closest point on the triangles). The sign: ``signed_distance`` uses the
  generalised winding number by default (robust on any surface); grids (``compute_sdf_grid``) use the
  angle-weighted pseudonormal of the closest feature (Baerentzen & Aanaes 2005), which gives the same sign
  on a closed, consistently wound mesh without degenerate faces (what ``close_holes`` / ``acdc_surface``
  return, and what ``pseudonormal_safe`` checks) at a fraction of the cost: the winding number visits the
  whole mesh hierarchy per point, the pseudonormal only the closest feature. On any other mesh grids
  fall back to the winding number.
- ``SdfGrid.values[i, j, k]`` is the distance at ``origin + spacing * (i, j, k)``: array axes 0, 1, 2 are
  physical x, y, z.
- A patch of side ``a`` with ``N`` points per side around centre ``c`` samples the points
  ``c - a/2 + h * (i, j, k)``, ``i, j, k = 0 .. N-1``, ``h = a / (N - 1)`` (the paper's Section II.B), and
  is returned as ``patch[..., i, j, k]``: tensor dims 2, 3, 4 are x, y, z, like every volume here.

Patches are cut from a grid whose spacing is ``h / k`` for an integer ``k`` (``k = 1`` by default). Every
sample of a patch then shares one fractional offset from the grid, so a patch is one gathered block and
three separable linear interpolations (no per-sample index arithmetic): cutting millions of samples is cheap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SdfGrid", "SIGNS", "signed_distance", "pseudonormal_safe", "compute_sdf_grid", "patch_points",
           "extract_patches"]


SIGNS = ("winding_number", "pseudonormal")


def signed_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, *, closest: bool = False,
                    sign: str = "winding_number"):
    """Exact signed distance of ``(n, 3)`` points to a closed triangle mesh, negative inside. float64 ``(n,)``.

    Args:
        sign: ``"winding_number"`` (any surface) or ``"pseudonormal"`` (only for meshes that pass
            ``pseudonormal_safe``; same values there, several times faster).
        closest: also return the index of the closest face ``(n,)`` and the closest point ``(n, 3)``.
    """
    import igl

    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}, got {sign!r}")
    points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        empty = np.empty(0)
        return (empty, np.empty(0, dtype=np.int64), np.empty((0, 3))) if closest else empty
    sign_type = igl.SIGNED_DISTANCE_TYPE_WINDING_NUMBER if sign == "winding_number" else \
        igl.SIGNED_DISTANCE_TYPE_PSEUDONORMAL
    s, face, point, _ = igl.signed_distance(points, np.ascontiguousarray(vertices, dtype=np.float64),
                                            np.ascontiguousarray(faces, dtype=np.int64), sign_type=sign_type)
    return (s, face, point) if closest else s


def pseudonormal_safe(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Whether the pseudonormal sign is exact: watertight, consistently wound, no degenerate face, no unused
    or duplicated vertex position."""
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=False, validate=False)
    if len(mesh.faces) == 0 or not (mesh.is_watertight and mesh.is_winding_consistent):
        return False
    area = mesh.area_faces
    if not np.all(area > 1e-12 * max(float(area.max()), 1e-300)):
        return False
    used = np.unique(mesh.faces)
    return len(np.unique(np.asarray(vertices)[used], axis=0)) == len(used)


@dataclass(frozen=True)
class SdfGrid:
    """Signed distances on a regular isotropic grid (see the module's Convention).

    Args:
        values: ``(nx, ny, nz)`` float32; NaN at nodes that were not computed (outside the band).
        origin: ``(3,)`` physical position of ``values[0, 0, 0]``.
        spacing: grid step in physical units.
    """

    values: np.ndarray
    origin: np.ndarray
    spacing: float

    def sample(self, points: np.ndarray) -> np.ndarray:
        """Trilinear interpolation at ``(n, 3)`` physical points; float32 ``(n,)``.

        Raises:
            ValueError: a point lies outside the grid.
        """
        return trilinear(self.values[None], self.origin, np.full(3, self.spacing), points)[0]


def trilinear(volume: np.ndarray, origin: np.ndarray, spacing: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of ``(C, nx, ny, nz)`` channels at ``(n, 3)`` physical points -> ``(C, n)``.

    Node ``(i, j, k)`` sits at ``origin + spacing * (i, j, k)`` (axis-aligned grid). Points outside the
    grid raise ``ValueError``.
    """
    from scipy.ndimage import map_coordinates

    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    shape = np.array(volume.shape[1:])
    u = (points - np.asarray(origin, dtype=np.float64)) / np.asarray(spacing, dtype=np.float64)
    tol = 1e-6
    if len(u) and (np.any(u < -tol) or np.any(u > shape - 1 + tol)):
        bad = int(np.flatnonzero(np.any((u < -tol) | (u > shape - 1 + tol), axis=1))[0])
        raise ValueError(f"point {points[bad].tolist()} lies outside the grid of shape {tuple(shape)}")
    return np.stack([map_coordinates(np.asarray(channel, dtype=np.float32), u.T, order=1, mode="nearest")
                     for channel in volume]).reshape(len(volume), len(u))


def _block_starts(centres: np.ndarray, origin: np.ndarray, grid_spacing: float, side: float):
    """Grid index of each patch's first sample: integer part ``(B, 3)`` and fractional part ``(B, 3)``."""
    u0 = (np.asarray(centres, dtype=np.float64) - side / 2 - origin) / grid_spacing
    start = np.floor(u0).astype(np.int64)
    return start, u0 - start


def compute_sdf_grid(vertices: np.ndarray, faces: np.ndarray, spacing: float, *, margin: float = 0.0,
                     band_centres: np.ndarray | None = None, band_side: float | None = None,
                     n: int = 16, sign: str | None = None) -> SdfGrid:
    """Exact signed distances on a grid covering the mesh's bounding box plus ``margin``.

    Args:
        vertices, faces: a closed triangle mesh (see ``close_holes``).
        spacing: grid step.
        margin: extra space around the bounding box on every side.
        band_centres, band_side, n: when given, only the nodes that trilinear patches of side
            ``band_side`` with ``n`` points around ``band_centres`` (``(B, 3)``) read are computed; the others
            are NaN. This is the cost of a patch set: for a vessel tree most of the bounding box is far from
            the surface.
        sign: see ``signed_distance``; default ``"pseudonormal"`` when ``pseudonormal_safe``, else
            ``"winding_number"``. Both give the same values on a safe mesh.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    if not spacing > 0:
        raise ValueError(f"grid spacing must be positive, got {spacing}")
    lo = vertices.min(axis=0) - margin - spacing
    hi = vertices.max(axis=0) + margin + spacing
    shape = np.ceil((hi - lo) / spacing).astype(np.int64) + 1
    values = np.full(tuple(shape), np.nan, dtype=np.float32)
    if band_centres is None:
        nodes = np.indices(tuple(shape)).reshape(3, -1).T
    else:
        if band_side is None:
            raise ValueError("band_side is needed with band_centres")
        nodes = np.argwhere(_patch_footprint(shape, lo, spacing, np.asarray(band_centres), band_side, n))
    if sign is None:
        sign = "pseudonormal" if pseudonormal_safe(vertices, faces) else "winding_number"
    nodes = nodes[np.argsort(_morton_code(nodes), kind="stable")]  # nearby queries in turn: ~1.25x faster
    values[tuple(nodes.T)] = signed_distance(lo + spacing * nodes, vertices, faces, sign=sign)
    return SdfGrid(values=values, origin=lo, spacing=float(spacing))


def _morton_code(nodes: np.ndarray) -> np.ndarray:
    """Z-order key of ``(n, 3)`` non-negative grid indices (< 2**21), interleaving their bits."""
    code = np.zeros(len(nodes), dtype=np.uint64)
    for axis in range(3):
        x = nodes[:, axis].astype(np.uint64) & np.uint64(0x1FFFFF)
        for shift, mask in ((32, 0x1F00000000FFFF), (16, 0x1F0000FF0000FF), (8, 0x100F00F00F00F00F),
                            (4, 0x10C30C30C30C30C3), (2, 0x1249249249249249)):
            x = (x | (x << np.uint64(shift))) & np.uint64(mask)
        code |= x << np.uint64(axis)
    return code


def _patch_footprint(shape, origin, spacing, centres, side, n) -> np.ndarray:
    """Boolean ``shape`` mask of the nodes read when cutting patches around ``centres``."""
    from scipy.ndimage import maximum_filter1d

    stride = _oversampling(side, n, spacing)
    width = (n - 1) * stride + 2  # nodes spanned by one patch's interpolation block
    start, _ = _block_starts(centres, origin, spacing, side)
    if np.any(start < 0) or np.any(start + width > np.asarray(shape)):
        raise ValueError("patches around the band centres do not fit in the grid; increase the margin")
    occupied = np.zeros(shape, dtype=bool)
    occupied[tuple(start.T)] = True
    for axis in range(3):  # box dilation: node x is read when some start lies in (x - width, x]
        occupied = maximum_filter1d(occupied, size=width, axis=axis, origin=(width - 1) // 2, mode="constant")
    return occupied


def _oversampling(side: float, n: int, grid_spacing: float) -> int:
    """Integer ratio of patch spacing ``side / (n - 1)`` to grid spacing; ValueError if not an integer."""
    ratio = side / (n - 1) / grid_spacing
    k = int(round(ratio))
    if k < 1 or abs(ratio - k) > 1e-6 * max(ratio, 1):
        raise ValueError(f"patch spacing {side / (n - 1):g} (side {side:g}, {n} points) must be an integer "
                         f"multiple of the grid spacing {grid_spacing:g}")
    return k


def patch_points(centre: np.ndarray, side: float, n: int = 16) -> np.ndarray:
    """The ``(n, n, n, 3)`` sample positions of one patch (see the module's Convention)."""
    t = -side / 2 + side / (n - 1) * np.arange(n)
    gx, gy, gz = np.meshgrid(t, t, t, indexing="ij")
    return np.asarray(centre, dtype=np.float64) + np.stack([gx, gy, gz], axis=-1)


def extract_patches(grid: SdfGrid, centres: np.ndarray, side: float, n: int = 16) -> torch.Tensor:
    """Trilinear SDF patches around ``(B, 3)`` centres: float32 tensor ``(B, 1, n, n, n)``.

    ``side / (n - 1)`` must be an integer multiple of ``grid.spacing``. A NaN in a patch means the grid was
    computed for a band that does not include this centre.
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    stride = _oversampling(side, n, grid.spacing)
    start, frac = _block_starts(centres, grid.origin, grid.spacing, side)
    width = (n - 1) * stride + 2
    if len(start) and (np.any(start < 0) or np.any(start + width > np.asarray(grid.values.shape))):
        raise ValueError("a patch reaches outside the SDF grid (centre too close to the grid's border)")
    # Every sample of a patch has the same fractional offset from the grid: gather the nodes the patch
    # reads once (an (n+1)^3 block for stride 1, (2n)^3 otherwise), then interpolate along x, y and z in
    # turn between neighbouring slices of the block.
    if stride == 1:
        offsets, lo, hi = torch.arange(n + 1), slice(0, n), slice(1, n + 1)
    else:
        offsets = torch.stack([torch.arange(n) * stride, torch.arange(n) * stride + 1], dim=1).reshape(-1)
        lo, hi = slice(0, 2 * n, 2), slice(1, 2 * n, 2)
    values = torch.from_numpy(grid.values)
    _, ny, nz = values.shape
    s = torch.from_numpy(start)
    flat = ((s[:, 0, None] + offsets) * (ny * nz))[:, :, None, None] + \
        ((s[:, 1, None] + offsets) * nz)[:, None, :, None] + (s[:, 2, None] + offsets)[:, None, None, :]
    block = values.reshape(-1)[flat]
    f = torch.from_numpy(frac.astype(np.float32))
    out = torch.lerp(block[:, lo], block[:, hi], f[:, 0, None, None, None])
    out = torch.lerp(out[:, :, lo], out[:, :, hi], f[:, 1, None, None, None])
    out = torch.lerp(out[:, :, :, lo], out[:, :, :, hi], f[:, 2, None, None, None])
    return out.unsqueeze(1)
