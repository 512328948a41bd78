"""What a conversion reads: the cases of IntrA or ACDC, their classes, official folds and patient groups.

A ``MeshSource`` is what the dataset writers (``write_nnunet_dataset``, ``write_patch_dataset``) consume;
``mesh_source("intra" | "acdc", root)`` builds one from a dataset folder in its real layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from nnunet_equivariant.meshes.labelled_mesh import LabelledMesh

__all__ = ["MeshCase", "MeshSource", "intra_source", "acdc_source", "mesh_source", "grouped_folds"]


@dataclass(frozen=True)
class MeshCase:
    """A case to convert: its name, how to read it, its group (cases of one group stay on one side of
    every split, e.g. the ED and ES frames of a patient) and whether it is a held-out test case."""

    name: str
    read: Callable[[], LabelledMesh]
    group: str
    test: bool = False


@dataclass(frozen=True)
class MeshSource:
    """Cases of one dataset with its class names and, where the dataset defines them, official folds.

    ``folds[k]`` lists the validation cases of cross-validation fold ``k`` (the other cases not held out for
    testing train it); ``None`` when the writer should make group-wise folds itself.
    """

    name: str
    cases: Sequence[MeshCase]
    class_names: tuple[str, ...]
    folds: list[list[str]] | None = None
    description: str = ""
    reference: str = ""
    extra: dict = field(default_factory=dict)


def intra_source(root: str | Path, split_dir: str | Path | None = None) -> MeshSource:
    """IntrA's annotated segments (``root/annotated``) with the official folds (``fileSplit/seg``)."""
    from nnunet_equivariant.meshes.intra import INTRA_CLASSES, find_intra_cases, read_intra_folds

    folds = read_intra_folds(root, split_dir)
    cases = [MeshCase(c.name, c.read, c.name) for c in find_intra_cases(root)]
    return MeshSource("IntrA", cases, INTRA_CLASSES, folds,
                      description="IntrA annotated aneurysm segments, closed; image: signed distance (mm, "
                                  "negative inside), labels: surface band by vertex class",
                      reference="Yang et al., IntrA: 3D Intracranial Aneurysm Dataset for Deep Learning, "
                                "CVPR 2020")


def acdc_source(root: str | Path, smoothing_iterations: int = 10) -> MeshSource:
    """ACDC-S surfaces of every patient's ED and ES frames; ``testing`` patients are held out."""
    from nnunet_equivariant.meshes.acdc import find_acdc_cases
    from nnunet_equivariant.meshes.acdc_s import ACDC_S_CLASSES

    cases = [MeshCase(c.name, lambda c=c: c.read(smoothing_iterations), c.patient, c.subset == "testing")
             for c in find_acdc_cases(root)]
    return MeshSource("ACDCS", cases, ACDC_S_CLASSES, None,
                      description="ACDC-S: surfaces of the union of myocardium and RV cavity of ACDC's ED/ES "
                                  "label volumes; image: signed distance (mm, negative inside), labels: "
                                  "surface band by vertex class",
                      reference="Bernard et al., IEEE TMI 2018; Dordiuk et al., mirror weight symmetry for 3D "
                                "mesh segmentation",
                      extra={"smoothing_iterations": smoothing_iterations})


def mesh_source(kind: str, root: str | Path, **kwargs) -> MeshSource:
    """``"intra"`` or ``"acdc"`` source from a dataset folder."""
    if kind == "intra":
        return intra_source(root, **kwargs)
    if kind == "acdc":
        return acdc_source(root, **kwargs)
    raise ValueError(f"unknown mesh dataset {kind!r}; use 'intra' or 'acdc'")


def grouped_folds(names: Sequence[str], groups: Sequence[str], num_folds: int = 5, seed: int = 0) -> list[list[str]]:
    """``num_folds`` validation sets that never split a group, groups dealt in a seeded random order."""
    unique = sorted(set(groups))
    if not 1 <= num_folds <= len(unique):
        raise ValueError(f"{len(unique)} groups cannot fill {num_folds} folds (make_splits in "
                         "nnunet_equivariant.meshes.nnunet_dataset reduces the number of folds instead)")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[g]: i % num_folds for i, g in enumerate(order)}
    return [[n for n, g in zip(names, groups) if fold_of[g] == k] for k in range(num_folds)]
