"""Signed distance of a closed surface: exact values on a grid, trilinear patches around vertices.

Convention
----------
- Signed distance is **negative inside** the surface and positive outside (the paper's convention and
  libigl's). trimesh's ``proximity.signed_distance`` uses the opposite sign (positive inside).
- Exact values come from libigl (closest point on the triangles; sign from the generalised winding
  number, robust on any closed surface).
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

__all__ = ["SdfGrid", "signed_distance", "compute_sdf_grid", "patch_points", "extract_patches"]


def signed_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, *, closest: bool = False):
    """Exact signed distance of ``(n, 3)`` points to a closed triangle mesh, negative inside. float64 ``(n,)``.

    With ``closest=True`` also returns the index of the closest face ``(n,)`` and the closest point ``(n, 3)``.
    """
    import igl

    points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        empty = np.empty(0)
        return (empty, np.empty(0, dtype=np.int64), np.empty((0, 3))) if closest else empty
    s, face, point, _ = igl.signed_distance(points, np.ascontiguousarray(vertices, dtype=np.float64),
                                            np.ascontiguousarray(faces, dtype=np.int64),
                                            sign_type=igl.SIGNED_DISTANCE_TYPE_WINDING_NUMBER)
    return (s, face, point) if closest else s


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
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    shape = np.array(volume.shape[1:])
    u = (points - np.asarray(origin, dtype=np.float64)) / np.asarray(spacing, dtype=np.float64)
    tol = 1e-6
    if len(u) and (np.any(u < -tol) or np.any(u > shape - 1 + tol)):
        bad = int(np.flatnonzero(np.any((u < -tol) | (u > shape - 1 + tol), axis=1))[0])
        raise ValueError(f"point {points[bad].tolist()} lies outside the grid of shape {tuple(shape)}")
    u = np.clip(u, 0, shape - 1)
    i0 = np.minimum(np.floor(u).astype(np.int64), np.maximum(shape - 2, 0))
    f = (u - i0).astype(np.float32)
    out = np.zeros((volume.shape[0], len(u)), dtype=np.float32)
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1 - f[:, 2]
                ix = np.minimum(i0[:, 0] + dx, shape[0] - 1)
                iy = np.minimum(i0[:, 1] + dy, shape[1] - 1)
                iz = np.minimum(i0[:, 2] + dz, shape[2] - 1)
                out += (wx * wy * wz)[None] * volume[:, ix, iy, iz]
    return out


def _block_starts(centres: np.ndarray, origin: np.ndarray, grid_spacing: float, side: float):
    """Grid index of each patch's first sample: integer part ``(B, 3)`` and fractional part ``(B, 3)``."""
    u0 = (np.asarray(centres, dtype=np.float64) - side / 2 - origin) / grid_spacing
    start = np.floor(u0).astype(np.int64)
    return start, u0 - start


def compute_sdf_grid(vertices: np.ndarray, faces: np.ndarray, spacing: float, *, margin: float = 0.0,
                     band_centres: np.ndarray | None = None, band_side: float | None = None,
                     n: int = 16) -> SdfGrid:
    """Exact signed distances on a grid covering the mesh's bounding box plus ``margin``.

    Args:
        vertices, faces: a closed triangle mesh (see ``close_holes``).
        spacing: grid step.
        margin: extra space around the bounding box on every side.
        band_centres, band_side, n: when given, only the nodes that trilinear patches of side
            ``band_side`` with ``n`` points around ``band_centres`` (``(B, 3)``) read are computed; the others
            are NaN. This is the cost of a patch set: for a vessel tree most of the bounding box is far from
            the surface.
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
    values[tuple(nodes.T)] = signed_distance(lo + spacing * nodes, vertices, faces)
    return SdfGrid(values=values, origin=lo, spacing=float(spacing))


def _patch_footprint(shape, origin, spacing, centres, side, n) -> np.ndarray:
    """Boolean ``shape`` mask of the nodes read when cutting patches around ``centres``."""
    stride = _oversampling(side, n, spacing)
    width = (n - 1) * stride + 2  # nodes spanned by one patch's interpolation block
    start, _ = _block_starts(centres, origin, spacing, side)
    if np.any(start < 0) or np.any(start + width > np.asarray(shape)):
        raise ValueError("patches around the band centres do not fit in the grid; increase the margin")
    occupied = np.zeros(shape, dtype=np.int32)
    np.add.at(occupied, tuple(start.T), 1)
    for axis in range(3):  # box dilation [start, start + width) along each axis by a running sum
        c = np.cumsum(occupied, axis=axis)
        shifted = np.zeros_like(c)
        sl_dst = [slice(None)] * 3
        sl_src = [slice(None)] * 3
        sl_dst[axis] = slice(width, None)
        sl_src[axis] = slice(None, -width)
        shifted[tuple(sl_dst)] = c[tuple(sl_src)]
        occupied = c - shifted
    return occupied > 0


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
