"""ACDC (Bernard et al., 2018) patients, read as ACDC-S labelled surfaces of their ED and ES frames.

The layout of the challenge's release is followed exactly::

    ACDC/training/patient001/Info.cfg                     ED: 1 / ES: 12 / Group: DCM / Height: ... /
                                                          NbFrame: 30 / Weight: ...
    ACDC/training/patient001/patient001_frame01_gt.nii.gz labels 1 RV cavity, 2 myocardium, 3 LV cavity
    ACDC/training/patient001/patient001_frame12_gt.nii.gz
    ACDC/testing/patient101/...                           (same layout)

``find_acdc_cases`` accepts the dataset folder (with ``training``/``testing``), one of those folders, or a
folder of ``patientXXX`` folders. Each patient gives two cases, ``patientXXX_ED`` and ``patientXXX_ES``.
A missing ``Info.cfg`` key or frame file and a label volume without all of the labels 1, 2, 3 (or with
others) raise ``ValueError`` / ``FileNotFoundError`` naming the file when the case is read.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_equivariant.meshes.acdc_s import acdc_surface
from nnunet_equivariant.meshes.labelled_mesh import LabelledMesh

__all__ = ["AcdcCase", "read_info_cfg", "find_acdc_cases", "read_acdc_case"]

INFO_KEYS = ("ED", "ES", "Group", "Height", "NbFrame", "Weight")


@dataclass(frozen=True)
class AcdcCase:
    """One frame of one patient: ``name`` (``patient001_ED``), the patient folder, the phase and the subset
    (``training``/``testing``, or ``""`` for a bare folder of patients)."""

    name: str
    patient_dir: Path
    phase: str
    subset: str

    @property
    def patient(self) -> str:
        return self.patient_dir.name

    def read(self, smoothing_iterations: int = 10) -> LabelledMesh:
        return read_acdc_case(self, smoothing_iterations)


def read_info_cfg(path: str | Path) -> dict[str, str]:
    """Parse ``Info.cfg`` (``key: value`` lines); ``ED``, ``ES`` and ``NbFrame`` must be integers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    info = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    for key in ("ED", "ES"):
        if key not in info:
            raise ValueError(f"{path}: no {key} frame (expected keys {', '.join(INFO_KEYS)})")
    for key in ("ED", "ES", "NbFrame"):
        if key in info and not info[key].isdigit():
            raise ValueError(f"{path}: {key} must be a frame number, got {info[key]!r}")
    return info


def frame_label_file(patient_dir: Path, phase: str) -> Path:
    """``patientXXX_frameYY_gt.nii.gz`` of the ED or ES frame named in ``Info.cfg``."""
    info = read_info_cfg(patient_dir / "Info.cfg")
    return patient_dir / f"{patient_dir.name}_frame{int(info[phase]):02d}_gt.nii.gz"


def read_acdc_case(case: AcdcCase, smoothing_iterations: int = 10) -> LabelledMesh:
    """The ACDC-S surface of one frame (see ``nnunet_equivariant.meshes.acdc_s``)."""
    import SimpleITK as sitk

    gt = frame_label_file(case.patient_dir, case.phase)
    if not gt.is_file():
        raise FileNotFoundError(f"{gt} does not exist (the {case.phase} frame named in Info.cfg)")
    image = sitk.ReadImage(str(gt))
    if image.GetDimension() != 3:
        raise ValueError(f"{gt}: expected a 3D label volume, got {image.GetDimension()}D")
    present = set(np.unique(sitk.GetArrayViewFromImage(image)).tolist())
    if present - {0, 1, 2, 3}:
        raise ValueError(f"{gt}: unknown labels {sorted(present - {0, 1, 2, 3})} (ACDC uses 1 RV cavity, "
                         "2 myocardium, 3 LV cavity)")
    if {1, 2, 3} - present:
        raise ValueError(f"{gt}: labels {sorted({1, 2, 3} - present)} are missing (expected 1 RV cavity, "
                         "2 myocardium, 3 LV cavity)")
    mesh = acdc_surface(image, name=str(gt), smoothing_iterations=smoothing_iterations)
    return dataclasses.replace(mesh, name=case.name)


def find_acdc_cases(root: str | Path) -> list[AcdcCase]:
    """Every ``patientXXX`` folder under ``root`` (see module docstring), two cases each, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist")
    subsets = [(s, root / s) for s in ("training", "testing") if (root / s).is_dir()]
    if not subsets:
        subsets = [(root.name if root.name in ("training", "testing") else "", root)]
    cases = []
    for subset, folder in subsets:
        for patient_dir in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("patient")):
            for phase in ("ED", "ES"):
                cases.append(AcdcCase(f"{patient_dir.name}_{phase}", patient_dir, phase, subset))
    if not cases:
        raise FileNotFoundError(f"no patientXXX folders in {root}")
    return cases
