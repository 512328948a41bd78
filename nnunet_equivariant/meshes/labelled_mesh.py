"""``LabelledMesh``: a closed triangle surface with one class per original vertex.

Convention
----------
- ``vertices`` are physical coordinates (x, y, z), float64, in the units of the source (mm for ACDC).
- ``faces`` index ``vertices``; after closing they are wound counter-clockwise seen from outside, so face
  normals point out of the solid and the enclosed volume is positive.
- ``labels[i]`` is the class of vertex ``i`` for ``i < len(labels)``: the vertices of the source mesh,
  first and in their original order. Vertices from ``len(labels)`` on were added to close holes and carry
  no label; faces from ``num_original_faces`` on are those caps.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LabelledMesh"]


@dataclass(frozen=True)
class LabelledMesh:
    """A surface mesh with per-vertex classes, as read from IntrA or built from ACDC label volumes.

    Args:
        name: case identifier (``AN1``, ``patient001_ED``).
        vertices: ``(V, 3)`` float64 physical coordinates.
        faces: ``(F, 3)`` int64 vertex indices.
        labels: ``(L,)`` int64 class of each of the first ``L <= V`` vertices, in ``[0, len(class_names))``.
        class_names: one name per class (``("vessel", "aneurysm")``).
        num_original_faces: faces ``[0, num_original_faces)`` come from the source, later ones close holes.
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    num_original_faces: int

    def __post_init__(self):
        v = np.asarray(self.vertices, dtype=np.float64)
        f = np.asarray(self.faces, dtype=np.int64)
        lab = np.asarray(self.labels, dtype=np.int64)
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"{self.name}: vertices must have shape (V, 3), got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= len(v))):
            raise ValueError(f"{self.name}: faces must be (F, 3) indices into {len(v)} vertices")
        if lab.ndim != 1 or len(lab) > len(v):
            raise ValueError(f"{self.name}: {len(lab)} labels for {len(v)} vertices")
        if lab.size and (lab.min() < 0 or lab.max() >= len(self.class_names)):
            raise ValueError(f"{self.name}: labels {sorted(set(lab.tolist()))} outside the classes "
                             f"{list(self.class_names)}")
        if not 0 <= self.num_original_faces <= len(f):
            raise ValueError(f"{self.name}: num_original_faces={self.num_original_faces} for {len(f)} faces")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)
        object.__setattr__(self, "labels", lab)
        object.__setattr__(self, "class_names", tuple(self.class_names))

    @property
    def num_labelled(self) -> int:
        """Number of original (labelled) vertices; they come first."""
        return len(self.labels)

    @property
    def labelled_vertices(self) -> np.ndarray:
        """``(L, 3)`` coordinates of the original vertices."""
        return self.vertices[: self.num_labelled]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fields as named arrays: the one serialisation, used by ``save`` and by the patch sets' files."""
        return {"name": np.array(self.name), "vertices": self.vertices, "faces": self.faces, "labels": self.labels,
                "class_names": np.array(self.class_names), "num_original_faces": np.array(self.num_original_faces)}

    @classmethod
    def from_arrays(cls, arrays) -> "LabelledMesh":
        """Inverse of ``to_arrays``; ``arrays`` may be an open ``np.load`` file holding more keys."""
        return cls(name=str(arrays["name"]), vertices=arrays["vertices"], faces=arrays["faces"],
                   labels=arrays["labels"], class_names=tuple(str(c) for c in arrays["class_names"]),
                   num_original_faces=int(arrays["num_original_faces"]))

    def save(self, path: str | Path) -> None:
        """Write to a compressed ``.npz`` (read back with ``LabelledMesh.load``)."""
        np.savez_compressed(path, **self.to_arrays())

    @classmethod
    def load(cls, path: str | Path) -> "LabelledMesh":
        with np.load(path, allow_pickle=False) as z:
            return cls.from_arrays(z)
