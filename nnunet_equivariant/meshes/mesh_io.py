"""Write and read surface meshes with per-vertex data (labels, probabilities) as ``.ply`` or ``.vtu``.

Both formats keep per-vertex arrays by name (PLY vertex properties, VTK ``PointData``), so a labelled
mesh opens in ParaView, 3D Slicer or MeshLab with its labels. Writes are atomic (temporary file, then
rename) and never overwrite unless asked.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_equivariant.io import atomic_file, check_target

__all__ = ["write_labelled_mesh", "read_labelled_mesh"]

_SUFFIXES = (".ply", ".vtu")


def write_labelled_mesh(path: str | Path, vertices: np.ndarray, faces: np.ndarray,
                        point_data: dict[str, np.ndarray], *, overwrite: bool = False) -> Path:
    """Write a triangle mesh with per-vertex arrays to ``path`` (``.ply`` or ``.vtu``).

    Args:
        vertices: ``(V, 3)`` coordinates.
        faces: ``(F, 3)`` vertex indices.
        point_data: name -> ``(V,)`` or ``(V, k)`` array; integer arrays are stored as int32.
    """
    import meshio

    path = Path(path)
    if path.suffix not in _SUFFIXES:
        raise ValueError(f"{path}: unsupported mesh format {path.suffix!r}; use .ply or .vtu")
    check_target(path, overwrite)
    data = {}
    for key, value in point_data.items():
        value = np.asarray(value)
        if len(value) != len(vertices):
            raise ValueError(f"point data {key!r} has {len(value)} entries for {len(vertices)} vertices")
        data[key] = value.astype(np.int32) if np.issubdtype(value.dtype, np.integer) else value
    mesh = meshio.Mesh(np.asarray(vertices, dtype=np.float64), [("triangle", np.asarray(faces, dtype=np.int32))],
                       point_data=data)
    with atomic_file(path, overwrite) as tmp:
        meshio.write(tmp, mesh, file_format="ply" if path.suffix == ".ply" else "vtu")
    return path


def read_labelled_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Read a mesh written by ``write_labelled_mesh``: ``(vertices, faces, point_data)``."""
    import meshio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    mesh = meshio.read(path)
    triangles = [c.data for c in mesh.cells if c.type == "triangle"]
    if not triangles:
        raise ValueError(f"{path}: no triangles")
    return np.asarray(mesh.points, dtype=np.float64), np.concatenate(triangles).astype(np.int64), \
        {k: np.asarray(v) for k, v in mesh.point_data.items()}
