"""Small synthetic stand-ins for IntrA and ACDC, written in the real datasets' on-disk formats.

Real IntrA and ACDC need a registration to download, so tests, the benchmark and first-time users run the
pipeline on these instead:

- ``write_intra_standin``: branched vessel segments (a parent tube splitting in two, open at all three
  ends) with a spherical bulge labelled aneurysm, as ``annotated/ad/ANk-_norm.ad`` (``x y z nx ny nz label``,
  label 0 vessel, 1 aneurysm, 2 aneurysm neck), ``annotated/obj/ANk_full.obj`` (face groups ``aneurysm`` and
  ``others``, faces as ``v//vn``) and the five ``fileSplit/seg/annSplit_i.txt`` fold files.
- ``write_acdc_standin``: patients of nested ellipsoids in ACDC's label convention (1 RV cavity,
  2 myocardium, 3 LV cavity), an open base, anisotropic spacing (1.5 x 1.5 x 8 mm by default) and an
  oblique direction matrix (proper for odd patients, improper for even ones), as
  ``patientXXX/Info.cfg`` and ``patientXXX_frameYY.nii.gz`` / ``_gt.nii.gz`` for the ED and ES frames.

``heart_labels`` is the analytic label function behind the ACDC stand-in, for tests that check the
surface labelling against the geometry rather than against the label volume.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_equivariant.io import write_nifti

__all__ = ["vessel_mesh", "write_intra_standin", "heart_labels", "write_acdc_standin"]


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix."""
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=rng).as_matrix()


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1 - h)


def vessel_mesh(seed: int = 0, spacing: float = 0.3):
    """A branched vessel segment with an aneurysm, open at its three ends.

    Args:
        seed: shape and pose of the segment.
        spacing: marching-cubes step in mm (0.3 gives ~3-4k vertices, 0.17 ~10k).
    Returns:
        ``(vertices (V, 3), faces (F, 3), labels (V,))`` with IntrA labels 0 vessel, 1 aneurysm,
        2 neck (aneurysm vertices next to vessel vertices); faces wound outwards.
    """
    import trimesh
    from skimage.measure import marching_cubes

    rng = np.random.default_rng(seed)
    r0, r1, r2 = rng.uniform(1.3, 1.6), rng.uniform(0.9, 1.2), rng.uniform(0.9, 1.2)
    length = 8.0
    base = np.array([0.0, 0.0, -length])
    fork = np.zeros(3)
    ends = []
    for azimuth, tilt in ((rng.uniform(-0.3, 0.3), rng.uniform(0.5, 0.8)),
                          (np.pi + rng.uniform(-0.3, 0.3), rng.uniform(0.5, 0.8))):
        ends.append(length * np.array([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth),
                                       np.cos(tilt)]))
    bulge_radius = rng.uniform(1.8, 2.3)
    side = 0 if rng.uniform() < 0.5 else 1
    along = ends[side] * rng.uniform(0.35, 0.5)  # on a branch, pushed out sideways
    outward = np.cross(ends[side], [0.0, 1.0, 0.0])
    outward /= np.linalg.norm(outward)
    centre = along + outward * (r1 if side == 0 else r2) * 0.9

    lo, hi = np.full(3, -length - 2.0), np.full(3, length + 2.0)
    axes = [np.arange(lo[d], hi[d] + spacing, spacing) for d in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    tubes = _smooth_min(_segment_distance(grid, base, fork) - r0,
                        np.minimum(_segment_distance(grid, fork, ends[0]) - r1,
                                   _segment_distance(grid, fork, ends[1]) - r2), 0.8)
    bulge = np.linalg.norm(grid - centre, axis=-1) - bulge_radius
    field = _smooth_min(tubes, bulge, 0.6)
    verts, faces, _, _ = marching_cubes(field, level=0.0, spacing=(spacing,) * 3)
    mesh = trimesh.Trimesh(verts + lo, faces, process=True)
    # open the three ends: drop the faces beyond a plane 1.5 mm before each tube's end (a ragged cut, as
    # when a segment is cut out of a vessel tree without re-meshing)
    keep = np.ones(len(mesh.faces), dtype=bool)
    for a, b in ((fork, base), (fork, ends[0]), (fork, ends[1])):
        axis = (b - a) / np.linalg.norm(b - a)
        beyond = (mesh.vertices - (b - 1.5 * axis)) @ axis > 0
        keep &= ~beyond[mesh.faces].any(axis=1)
    mesh = trimesh.Trimesh(mesh.vertices, mesh.faces[keep], process=False)
    mesh = max(mesh.split(only_watertight=False), key=lambda m: len(m.faces))
    mesh.remove_unreferenced_vertices()
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    # labels: the bulge where it dominates the smooth union, the neck on its rim
    tube_d = np.minimum(_segment_distance(v, base, fork) - r0,
                        np.minimum(_segment_distance(v, fork, ends[0]) - r1,
                                   _segment_distance(v, fork, ends[1]) - r2))
    aneurysm = (np.linalg.norm(v - centre, axis=-1) - bulge_radius) < tube_d
    labels = aneurysm.astype(np.int64)
    edges = mesh.edges_unique
    mixed = aneurysm[edges[:, 0]] != aneurysm[edges[:, 1]]
    rim = np.unique(edges[mixed].ravel())
    labels[rim[aneurysm[rim]]] = 2
    rotation = _rotation(rng)
    v = v @ rotation.T + rng.uniform(-20, 20, size=3)
    return v, f, labels


def _write_obj(path: Path, vertices, normals, faces, labels) -> None:
    aneurysm_face = np.all(labels[faces] > 0, axis=1)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"vn {x:.6f} {y:.6f} {z:.6f}" for x, y, z in normals]
    for group, mask in (("aneurysm", aneurysm_face), ("others", ~aneurysm_face)):
        lines.append(f"g {group}")
        lines += [f"f {a}//{a} {b}//{b} {c}//{c}" for a, b, c in faces[mask] + 1]
    path.write_text("\n".join(lines) + "\n")


def write_intra_standin(root: str | Path, num_cases: int = 5, seed: int = 0, spacing: float = 0.3) -> Path:
    """Write an IntrA-like dataset (see the module docstring) under ``root``; returns ``root``.

    Cases are named ``AN1`` ... ``AN{num_cases}`` and dealt round-robin into the five folds.
    """
    import trimesh

    root = Path(root)
    (root / "annotated" / "ad").mkdir(parents=True, exist_ok=True)
    (root / "annotated" / "obj").mkdir(parents=True, exist_ok=True)
    (root / "fileSplit" / "seg").mkdir(parents=True, exist_ok=True)
    folds: list[list[str]] = [[] for _ in range(5)]
    for k in range(1, num_cases + 1):
        v, f, labels = vessel_mesh(seed * 1000 + k, spacing)
        normals = trimesh.Trimesh(v, f, process=False).vertex_normals
        ad = root / "annotated" / "ad" / f"AN{k}-_norm.ad"
        ad.write_text("".join(f"{p[0]:.6f} {p[1]:.6f} {p[2]:.6f} {n[0]:.6f} {n[1]:.6f} {n[2]:.6f} {lab}\n"
                              for p, n, lab in zip(v, normals, labels)))
        _write_obj(root / "annotated" / "obj" / f"AN{k}_full.obj", v, normals, f, labels)
        folds[(k - 1) % 5].append(f"annotated/ad/AN{k}-_norm.ad")
    for i, names in enumerate(folds):
        (root / "fileSplit" / "seg" / f"annSplit_{i}.txt").write_text("".join(n + "\n" for n in names))
    return root


# --- ACDC ------------------------------------------------------------------------------------------


def heart_labels(points: np.ndarray, phase: str = "ED") -> np.ndarray:
    """ACDC labels of physical points (mm, heart frame): 0 background, 1 RV cavity, 2 myocardium, 3 LV cavity.

    The LV cavity and the epicardium are confocal-looking ellipsoids along z, cut open at the base
    ``z > 20``; the RV cavity is an ellipsoid on the +x side, outside the epicardium. ES is the contracted
    phase (smaller cavities, thicker wall).
    """
    p = np.asarray(points, dtype=np.float64)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    s = 1.0 if phase == "ED" else 0.8
    lv = (x / (20 * s)) ** 2 + (y / (20 * s)) ** 2 + ((z - 5) / (42 * s)) ** 2 < 1
    epi = (x / 31) ** 2 + (y / 31) ** 2 + ((z + 2) / 58) ** 2 < 1
    rv = ((x - 30) / (22 * s)) ** 2 + (y / (30 * s)) ** 2 + ((z - 6) / 30) ** 2 < 1
    below_base = z <= 20
    labels = np.zeros(p.shape[:-1], dtype=np.uint8)
    labels[rv & ~epi & below_base] = 1
    labels[epi & below_base] = 2
    labels[lv & below_base] = 3
    return labels


def _acdc_geometry(patient: int, rng: np.random.Generator):
    """Direction, spacing and origin of a stand-in patient; the heart's axes are oblique to the image's."""
    heart_to_world = _rotation(rng)
    direction = _rotation(rng)
    if patient % 2 == 0:
        direction = direction @ np.diag([1.0, 1.0, -1.0])  # improper, like many scanner orientations
    return heart_to_world, direction


def write_acdc_standin(root: str | Path, num_patients: int = 2, seed: int = 0,
                       spacing: tuple[float, float, float] = (1.5, 1.5, 8.0),
                       shape: tuple[int, int, int] = (96, 96, 16)) -> Path:
    """Write ACDC-like patients ``patient001`` ... under ``root/training``; returns ``root``.

    Each patient has ``Info.cfg`` (ED, ES, Group, Height, NbFrame, Weight) and, for its ED frame 1 and ES
    frame ``ES``, an image ``patientXXX_frameYY.nii.gz`` and labels ``patientXXX_frameYY_gt.nii.gz``.
    Also writes ``root/training/patientXXX/heart_to_world.txt``: the 3x3 rotation and the origin of the
    heart frame used by ``heart_labels`` (not part of ACDC; for tests).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for k in range(1, num_patients + 1):
        folder = root / "training" / f"patient{k:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        heart_to_world, direction = _acdc_geometry(k, rng)
        es = int(rng.integers(8, 14))
        (folder / "Info.cfg").write_text(f"ED: 1\nES: {es}\nGroup: NOR\nHeight: 175.0\nNbFrame: 30\n"
                                         f"Weight: 70.0\n")
        extent = np.asarray(spacing) * (np.asarray(shape) - 1)
        centre = rng.uniform(-50, 50, size=3)
        origin = centre - direction @ (extent / 2)
        np.savetxt(folder / "heart_to_world.txt", np.vstack([heart_to_world, centre]))
        idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).reshape(-1, 3)
        world = origin + (idx * np.asarray(spacing)) @ direction.T
        heart = (world - centre) @ heart_to_world  # world -> heart frame
        for frame, phase in ((1, "ED"), (es, "ES")):
            labels = heart_labels(heart, phase).reshape(shape)
            intensity = np.array([20.0, 200.0, 90.0, 220.0], dtype=np.float32)[labels]
            intensity += rng.normal(0, 5, size=shape).astype(np.float32)
            for array, suffix in ((intensity, ""), (labels, "_gt")):
                write_nifti(folder / f"patient{k:03d}_frame{frame:02d}{suffix}.nii.gz", array, spacing, origin,
                            direction)
    return root
