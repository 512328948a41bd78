"""Per-vertex SDF patch sets for the paper's classifiers, stored compactly and cut on the fly.

``write_patch_dataset`` stores, per mesh, ``CASE.npz`` with the ``LabelledMesh`` and the exact signed
distances on the grid nodes its patches read (NaN elsewhere; compresses to little). ``patch_dataset.json``
holds the patch geometry (side ``a``, ``N`` points per side), the class names and the paper's nine
train:test splits (10:90 ... 90:10) for each seed, drawn by mesh (by patient for ACDC, so the ED and ES
frames of a patient never straddle a split).

``PatchDataset`` serves ``(patch (1, N, N, N), label)`` pairs for every labelled vertex of the chosen
meshes; ``batch`` and ``batches`` cut whole batches at once (see ``extract_patches``), which is how the
training loop uses it.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from nnunet_equivariant.io import atomic_folder, check_target
from nnunet_equivariant.meshes.conversion import ConversionReport, read_cases
from nnunet_equivariant.meshes.labelled_mesh import LabelledMesh
from nnunet_equivariant.meshes.sdf import SdfGrid, compute_sdf_grid, extract_patches
from nnunet_equivariant.meshes.sources import MeshSource

__all__ = ["PAPER_TRAIN_FRACTIONS", "write_patch_dataset", "ratio_splits", "load_patch_case", "PatchDataset",
           "read_patch_meta", "split_cases"]

PAPER_TRAIN_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
META = "patch_dataset.json"


def _ratio_name(fraction: float) -> str:
    train = int(round(100 * fraction))
    return f"{train}:{100 - train}"


def ratio_splits(names: Sequence[str], groups: Sequence[str], fractions: Sequence[float] = PAPER_TRAIN_FRACTIONS,
                 seeds: Sequence[int] = (0,)) -> list[dict]:
    """Train/test splits by group: for each seed and fraction, ``round(fraction * groups)`` groups train.

    Each split keeps at least one group on each side. Returns dicts ``{"ratio": "20:80", "fraction", "seed",
    "train": [names], "test": [names]}``.
    """
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise ValueError(f"need at least two groups of meshes to split, got {len(unique)}")
    splits = []
    for seed in seeds:
        order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
        for fraction in fractions:
            if not 0 < fraction < 1:
                raise ValueError(f"train fraction must be in (0, 1), got {fraction}")
            k = min(max(int(round(fraction * len(unique))), 1), len(unique) - 1)
            train_groups = set(order[:k])
            splits.append({"ratio": _ratio_name(fraction), "fraction": fraction, "seed": int(seed),
                           "train": sorted(n for n, g in zip(names, groups) if g in train_groups),
                           "test": sorted(n for n, g in zip(names, groups) if g not in train_groups)})
    return splits


def write_patch_dataset(source: MeshSource, out_dir: str | Path, *, side: float, n: int = 16,
                        oversampling: int = 1, fractions: Sequence[float] = PAPER_TRAIN_FRACTIONS,
                        seeds: Sequence[int] = (0,), overwrite: bool = False) -> ConversionReport:
    """Write a patch set (see module docstring) to ``out_dir``.

    Args:
        side: patch side ``a`` in the meshes' units; samples are ``h = a / (n - 1)`` apart.
        n: points per patch side (the paper: 16).
        oversampling: the SDF grid spacing is ``h / oversampling``.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    check_target(out_dir, overwrite)
    if not side > 0 or n < 2 or oversampling < 1:
        raise ValueError(f"need side > 0, n >= 2, oversampling >= 1; got {side}, {n}, {oversampling}")
    groups = {c.group for c in source.cases}
    if len(groups) < 2:
        raise ValueError(f"{source.name} has {len(groups)} group(s) of cases; train:test splits need at least two")
    report = ConversionReport(output=out_dir)
    meshes = read_cases(source.cases, report)
    if not meshes:
        raise ValueError("no case could be read:\n" + report.summary())
    names, read_groups = [c.name for c, _ in meshes], [c.group for c, _ in meshes]
    if len(set(read_groups)) < 2:
        splits = []
        note = ("only one group of cases could be read: no train:test split stored (PatchDataset still serves "
                "its patches)")
        warnings.warn(note, stacklevel=2)
        report.notes.append(note)
    else:
        splits = ratio_splits(names, read_groups, fractions, seeds)
    spacing = side / (n - 1) / oversampling
    with atomic_folder(out_dir, overwrite) as tmp:
        for case, mesh in tqdm(meshes, desc="signed distance grids", unit="case"):
            grid = compute_sdf_grid(mesh.vertices, mesh.faces, spacing, margin=side / 2 + 2 * spacing,
                                    band_centres=mesh.labelled_vertices, band_side=side, n=n)
            np.savez_compressed(tmp / f"{case.name}.npz", sdf=grid.values, origin=grid.origin,
                                spacing=grid.spacing, **mesh.to_arrays())
            report.written.append(case.name)
        meta = {"source": source.name, "class_names": list(source.class_names), "side": side, "n": n,
                "grid_spacing": spacing, "sdf_sign": "negative inside", "cases": names,
                "groups": dict(zip(names, read_groups)), "skipped": report.skipped, "splits": splits}
        (tmp / META).write_text(json.dumps(meta, indent=2))
    return report


def read_patch_meta(folder: str | Path) -> dict:
    path = Path(folder) / META
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a patch set written by write_patch_dataset")
    return json.loads(path.read_text())


def split_cases(meta: dict, ratio: str, seed: int) -> tuple[list[str], list[str]]:
    """``(train, test)`` case names of one stored split (``ratio`` like ``"20:80"``)."""
    for s in meta["splits"]:
        if s["ratio"] == ratio and s["seed"] == seed:
            return s["train"], s["test"]
    known = sorted({(s["ratio"], s["seed"]) for s in meta["splits"]})
    raise ValueError(f"no split {ratio} with seed {seed}; stored: {known}")


def load_patch_case(path: str | Path) -> tuple[LabelledMesh, SdfGrid]:
    """The mesh and SDF grid of one ``CASE.npz`` of a patch set."""
    with np.load(path, allow_pickle=False) as z:
        mesh = LabelledMesh.from_arrays(z)
        grid = SdfGrid(values=z["sdf"], origin=z["origin"], spacing=float(z["spacing"]))
    return mesh, grid


class PatchDataset(torch.utils.data.Dataset):
    """``(patch, label)`` for every labelled vertex of the given cases of a patch set.

    ``patch`` is float32 ``(1, N, N, N)`` (dims x, y, z; see ``nnunet_equivariant.meshes.sdf``), ``label`` an
    int64 class index. The SDF grids of the cases are held in memory; pass the same ``cache`` dict to
    several datasets of one patch set (the splits of a study) to read each case once.
    """

    def __init__(self, folder: str | Path, cases: Sequence[str] | None = None,
                 cache: dict[str, tuple[LabelledMesh, SdfGrid]] | None = None):
        self.folder = Path(folder)
        self.meta = read_patch_meta(self.folder)
        self.side, self.n = float(self.meta["side"]), int(self.meta["n"])
        self.class_names = tuple(self.meta["class_names"])
        self.cases = list(cases) if cases is not None else list(self.meta["cases"])
        unknown = sorted(set(self.cases) - set(self.meta["cases"]))
        if unknown:
            raise ValueError(f"cases {unknown} are not in the patch set {self.folder}")
        self.meshes, self.grids = [], []
        for name in self.cases:
            if cache is not None and name in cache:
                mesh, grid = cache[name]
            else:
                mesh, grid = load_patch_case(self.folder / f"{name}.npz")
                if cache is not None:
                    cache[name] = (mesh, grid)
            self.meshes.append(mesh)
            self.grids.append(grid)
        self.case_index = np.concatenate([np.full(m.num_labelled, i) for i, m in enumerate(self.meshes)])
        self.vertex_index = np.concatenate([np.arange(m.num_labelled) for m in self.meshes])
        self.labels = np.concatenate([m.labels for m in self.meshes])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        patches, labels = self.batch(np.array([i]))
        return patches[0], int(labels[0])

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches ``(B, 1, N, N, N)`` and labels ``(B,)`` of the given sample indices, in their order."""
        indices = np.asarray(indices)
        out = torch.empty((len(indices), 1, self.n, self.n, self.n), dtype=torch.float32)
        cases = self.case_index[indices]
        for c in np.unique(cases):
            rows = np.flatnonzero(cases == c)
            centres = self.meshes[c].vertices[self.vertex_index[indices[rows]]]
            out[torch.from_numpy(rows)] = extract_patches(self.grids[c], centres, self.side, self.n)
        return out, torch.from_numpy(self.labels[indices])

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0) \
            -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """All samples in batches; shuffled with a seeded order when asked."""
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start:start + batch_size])
