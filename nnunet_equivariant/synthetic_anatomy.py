"""SynthSeg-style synthetic anatomy for pose-robustness benchmarks, rendered in any pose without interpolation.

A subject is a set of random parameters (no voxels): a smooth random deformation and five tissue classes
defined by signed distance functions in the subject's own frame (mm, centred at the volume centre):

- ``tissue`` (background label 0 inside a large ellipsoid, a mid intensity), in which lie
- ``blob`` (1): a large ellipsoid; ``tube`` (2): a thin (1.5 mm radius) curved capsule, 18 mm long;
  ``slab`` (3): a flat ellipsoid 3 mm thick; ``nodule`` (4): a small sphere.

Tube and slab share one intensity (only their shape tells them apart), blob and nodule another (only
their size); every structure is elongated or flat along a fixed axis in the canonical pose.

``render_subject(subject, shape, spacing, rotation)`` evaluates the subject at ``R^T p`` for every point
``p`` of the scanner grid, so a rotated test case is the subject placed in another pose, not an image
resampled after the fact: labels are the class at each voxel centre (exact in every pose) and images are
band-limited: the class intensities on a grid 3x finer, a Gaussian point-spread function, sampled at the
voxel centres, times a smooth bias field (fixed in the scanner frame), plus noise.

Convention: arrays ``(x, y, z)``, spacing in mm, ``rotation`` a 3x3 matrix acting on (x, y, z) about the
volume centre (``out(p) = subject(R^T p)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["LABELS", "AnatomyStyle", "sample_subject", "render_subject", "render_pose", "partial_volume_classes",
           "subject_labels"]

LABELS = {"background": 0, "blob": 1, "tube": 2, "slab": 3, "nodule": 4}
_SUPERSAMPLE = 3  # odd: every voxel centre is a point of the fine grid


@dataclass(frozen=True)
class AnatomyStyle:
    """Rendering of a subject. ``psf_sigma`` (mm, one or one per axis): Gaussian point-spread function; ``noise``: standard
    deviation of white Gaussian noise; ``bias``: amplitude of the log bias field; ``intensity_jitter``: per
    subject random offset of every class intensity (standard deviation)."""

    psf_sigma: float = 0.8
    noise: float = 0.03
    bias: float = 0.1
    intensity_jitter: float = 0.04


# class -> (mean intensity); class 5 is the tissue around the structures (label 0), -1 outside (air)
_INTENSITY = {0: 0.0, 5: 0.5, 1: 0.85, 4: 0.85, 2: 0.25, 3: 0.25}


def sample_subject(rng: np.random.Generator, scale: float = 1.0) -> dict:
    """Random parameters of one subject: deformation, structure jitter, intensities, bias field.

    ``scale`` multiplies every length (1.0 fits a 32 mm field of view: everything lies within 14 mm of the
    centre, so it stays in view in every pose)."""
    def jitter(v, sd):
        return np.asarray(v, dtype=np.float64) + rng.normal(0, sd, size=np.shape(v))

    directions = rng.normal(size=(3, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return {
        "scale": float(scale),
        "warp_k": directions * 2 * np.pi / 40.0,  # wavelength 40 mm (in units of scale)
        "warp_a": rng.normal(0, 0.8, size=(3, 3)),  # mm per mode and axis
        "warp_phase": rng.uniform(0, 2 * np.pi, size=3),
        "tissue_axes": jitter([13.5, 12.5, 11.5], 0.3),
        "blob_centre": jitter([-3.5, 4.0, 3.5], 0.5), "blob_axes": jitter([5.0, 3.8, 3.4], 0.3),
        "tube_start": jitter([-9.0, -4.5, -3.0], 0.5), "tube_length": 18.0 + rng.normal(0, 1.0),
        "tube_bend": jitter([0.0, 0.025, 0.015], 0.005), "tube_radius": 1.5 + rng.normal(0, 0.1),
        "slab_centre": jitter([5.0, 4.5, -3.5], 0.5), "slab_axes": jitter([1.5, 5.5, 4.5], [0.1, 0.3, 0.3]),
        "nodule_centre": jitter([3.5, -5.0, 5.0], 0.5), "nodule_radius": 2.2 + rng.normal(0, 0.15),
        "intensity": {c: v + rng.normal(0, 1) for c, v in _INTENSITY.items()},  # scaled by the style's jitter
        "bias_k": rng.normal(size=(3, 3)) * 2 * np.pi / 60.0,
        "bias_phase": rng.uniform(0, 2 * np.pi, size=3),
        "noise_seed": int(rng.integers(2 ** 31)),
    }


def _ellipsoid(q: np.ndarray, centre, axes) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid (scaled radial distance)."""
    axes = np.asarray(axes)
    r = np.linalg.norm((q - centre) / axes, axis=-1)
    return (r - 1) * axes.min()


def _tube(q: np.ndarray, start, length, bend, radius) -> np.ndarray:
    """Signed distance to a capsule of ``radius`` around ``start + t x + t^2 bend``, ``0 <= t <= length``
    (centreline sampled every 0.5 mm; exact within 0.02 mm of the surface). Points farther than ``radius +
    1`` mm from the centreline's bounding box get a lower bound (positive: outside)."""
    t = np.linspace(0, length, int(np.ceil(length / 0.5)) + 1)
    line = start + t[:, None] * np.array([1.0, 0, 0]) + (t - length / 2)[:, None] ** 2 * bend
    lo, hi = line.min(0) - radius - 1, line.max(0) + radius + 1
    near = np.all((q >= lo) & (q <= hi), axis=-1)
    d = np.full(q.shape[:-1], radius + 1.0)
    qn = q[near]
    dn = np.full(qn.shape[0], np.inf)
    for point in line:
        dn = np.minimum(dn, np.linalg.norm(qn - point, axis=-1))
    d[near] = dn
    return d - radius


def subject_classes(subject: dict, points: np.ndarray) -> np.ndarray:
    """Tissue class (``LABELS`` values, 5 for the surrounding tissue, 0 outside it) at ``points`` (mm)."""
    s = subject["scale"]
    q = points / s
    q = q + np.sin(q @ subject["warp_k"].T + subject["warp_phase"]) @ subject["warp_a"]
    classes = np.where(_ellipsoid(q, 0, subject["tissue_axes"]) <= 0, 5, 0).astype(np.uint8)
    structures = [
        (1, _ellipsoid(q, subject["blob_centre"], subject["blob_axes"])),
        (2, _tube(q, subject["tube_start"], subject["tube_length"], subject["tube_bend"], subject["tube_radius"])),
        (3, _ellipsoid(q, subject["slab_centre"], subject["slab_axes"])),
        (4, _ellipsoid(q, subject["nodule_centre"], [subject["nodule_radius"]] * 3)),
    ]
    for label, sd in structures:
        classes[sd <= 0] = label
    return classes


def subject_labels(subject: dict, points: np.ndarray) -> np.ndarray:
    """Segmentation labels at ``points`` (mm): the classes with the surrounding tissue as background."""
    classes = subject_classes(subject, points)
    classes[classes == 5] = 0
    return classes


def _grid(shape: Sequence[int], spacing: np.ndarray, factor: int = 1) -> np.ndarray:
    """Voxel centres (mm) of a grid ``factor`` times finer than ``shape``, centred at the volume centre;
    fine point ``factor * i + factor // 2`` is the centre of voxel ``i``."""
    axes = [(np.arange(n * factor) - (n * factor - 1) / 2) * sp / factor for n, sp in zip(shape, spacing)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1)


def render_subject(subject: dict, shape: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   rotation: np.ndarray | None = None, style: AnatomyStyle = AnatomyStyle()
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32 (x, y, z), label uint8 (x, y, z))`` of ``subject`` in the pose ``rotation``.

    The subject is evaluated at ``R^T p``: no interpolation of images or labels, whatever the angle. The
    noise and bias field belong to the scanner (same for every pose of a subject)."""
    lut = np.zeros(6)
    for c, v in subject["intensity"].items():
        lut[c] = _INTENSITY[c] + style.intensity_jitter * (v - _INTENSITY[c]) if c else 0.0
    image, classes = render_pose(lambda points: subject_classes(subject, points), lut, shape, spacing, rotation,
                                 style, subject["bias_k"], subject["bias_phase"], subject["noise_seed"])
    classes[classes == 5] = 0
    return image, classes


def render_pose(classes_at, intensity: np.ndarray, shape: Sequence[int], spacing: Sequence[float],
                rotation: np.ndarray | None, style: AnatomyStyle, bias_k: np.ndarray, bias_phase: np.ndarray,
                noise_seed: int, edge: str = "constant") -> tuple[np.ndarray, np.ndarray]:
    """The renderer shared by every anatomy: ``(image float32 (x, y, z), classes (x, y, z))``.

    ``classes_at(points)``: integer class at each point (mm, ``(..., 3)``, the subject's frame, origin at the
    volume centre); ``intensity[c]``: mean intensity of class ``c``. The classes are evaluated at ``R^T p``
    on a grid ``_SUPERSAMPLE`` times finer than the voxels, mapped to intensities, blurred by the style's
    Gaussian point-spread function and sampled at the voxel centres; times the bias field
    ``exp(bias * sum_j sin(bias_k[j] . p + bias_phase[j]) / 3)`` and plus white noise seeded by
    ``noise_seed`` (both fixed in the scanner frame). The returned classes are those at the voxel centres.
    ``edge``: how the blur continues the fine grid past the field of view (``scipy.ndimage`` mode:
    "constant" is air, "nearest" tissue that goes on)."""
    shape = tuple(int(n) for n in shape)
    spacing = np.asarray(spacing, dtype=np.float64)
    R = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    if R.shape != (3, 3) or not np.allclose(R @ R.T, np.eye(3), atol=1e-9):
        raise ValueError(f"rotation must be a 3x3 orthogonal matrix, got {R!r}")
    f = _SUPERSAMPLE
    fine = _grid(shape, spacing, f)
    classes = classes_at(fine @ R)  # rows p -> R^T p
    image = gaussian_filter(np.asarray(intensity, dtype=np.float64)[classes],
                            np.asarray(style.psf_sigma, dtype=np.float64) / (spacing / f), mode=edge)
    image = image[f // 2::f, f // 2::f, f // 2::f]
    centres = _grid(shape, spacing)
    image = image * np.exp(style.bias * np.sin(centres @ bias_k.T + bias_phase).sum(-1) / 3)
    image = image + style.noise * np.random.default_rng(noise_seed).normal(size=shape)
    # the voxel centres are points of the fine grid (odd supersampling): their classes are already known
    return image.astype(np.float32), classes[f // 2::f, f // 2::f, f // 2::f].copy()


def partial_volume_classes(classes_at, shape: Sequence[int], spacing: Sequence[float], rotation: np.ndarray | None,
                           num_classes: int) -> np.ndarray:
    """The class covering most of each voxel, ``(x, y, z)`` uint8: the most frequent class among the
    voxel's ``_SUPERSAMPLE ** 3`` points of :func:`render_pose`'s fine grid (ties go to the class at the voxel
    centre, then to the lowest class). :func:`render_pose` labels a voxel by its centre alone; a structure a
    few voxels across gets a different label map from the same subject depending on how the grid cuts it."""
    shape = tuple(int(n) for n in shape)
    R = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    f = _SUPERSAMPLE
    classes = classes_at(_grid(shape, np.asarray(spacing, dtype=np.float64), f) @ R)
    blocks = classes.reshape(shape[0], f, shape[1], f, shape[2], f).transpose(0, 2, 4, 1, 3, 5)
    blocks = blocks.reshape(*shape, f ** 3)
    counts = np.stack([(blocks == c).sum(-1) for c in range(num_classes)], -1).astype(np.float64)
    centre = classes[f // 2::f, f // 2::f, f // 2::f]
    counts += 0.5 * (np.arange(num_classes) == centre[..., None])  # ties to the centre's class
    return counts.argmax(-1).astype(np.uint8)
