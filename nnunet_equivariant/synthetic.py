"""Synthetic, pose-sensitive segmentation datasets written in nnU-Net's raw format.

Rods (label 1) and discs (label 2) of the *same* intensity in noise: only their shape tells them apart.
With ``orientation="fixed"`` every rod lies along the x axis and every disc's normal is the x axis, so a
network that is not rotation-equivariant can learn "bright and long along x" instead of "long and thin";
tested on rotated copies it fails, while a steerable network cannot depend on the pose.

Convention: arrays are indexed ``(x, y, z)`` here; files are written with SimpleITK, whose numpy view is
``(z, y, x)``, so nnU-Net reads them back as ``(x, y, z)`` after its transpose. Spacing is in mm.

Layout written (nnU-Net v2 raw)::

    <raw>/DatasetXXX_Name/dataset.json
                         imagesTr/Name_000_0000.nii.gz   labelsTr/Name_000.nii.gz
                         imagesTs/Name_100_0000.nii.gz   labelsTs/Name_100.nii.gz
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_equivariant.io import atomic_folder, raw_dataset_target, write_nifti

__all__ = ["RodsAndDiscs", "write_rods_and_discs_dataset", "render_case"]

LABELS = {"background": 0, "rod": 1, "disc": 2}


@dataclass(frozen=True)
class RodsAndDiscs:
    """Geometry and rendering of the shapes, in mm. Rods: length x radius; discs: radius x thickness.

    ``edge_width`` 0 renders hard binary shapes (intensity ``intensity`` inside, 0 outside); ``> 0`` renders
    a smooth partial-volume edge ``intensity * (1 - tanh(d / edge_width)) / 2`` of the signed distance ``d``
    to the shape's surface, so the image is close to band-limited and looks the same on the grid in every
    pose. ``noise`` is the standard deviation of Gaussian noise, white for ``noise_smoothing`` 0, else
    smoothed by a Gaussian of that sigma (mm) and rescaled to ``noise``. Labels are always ``d <= 0``.
    ``tight_placement``: keep a shape's bounding box (plus 1.5 voxels) inside the volume, so larger shapes
    still fit beside each other; ``False`` keeps every shape's half length (or disc radius) from the border
    along every axis, as datasets written before this option.
    """

    rod_length: float = 14.0
    rod_radius: float = 1.6
    disc_radius: float = 5.0
    disc_thickness: float = 2.4
    intensity: float = 1.0
    noise: float = 0.15
    edge_width: float = 0.0
    noise_smoothing: float = 0.0
    tight_placement: bool = False


def _random_direction(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def render_case(
    shape: Sequence[int],
    spacing: Sequence[float],
    rng: np.random.Generator,
    n_rods: int = 2,
    n_discs: int = 2,
    orientation: str = "fixed",
    geometry: RodsAndDiscs = RodsAndDiscs(),
) -> tuple[np.ndarray, np.ndarray]:
    """One case: ``(image float32 (x, y, z), label uint8 (x, y, z))``.

    ``orientation``: ``"fixed"`` (rods along x, disc normals along x) or ``"random"`` (uniform directions).
    Shapes are placed without overlap (a margin of one voxel); a shape that does not fit is dropped.
    """
    if orientation not in ("fixed", "random"):
        raise ValueError(f"orientation must be 'fixed' or 'random', got {orientation!r}")
    shape = tuple(int(s) for s in shape)
    spacing = np.asarray(spacing, dtype=np.float64)
    coords = np.stack(np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing)], indexing="ij"), -1)
    extent = (np.asarray(shape) - 1) * spacing
    label = np.zeros(shape, dtype=np.uint8)
    occupancy = np.zeros(shape)  # the rendered shapes before noise, in [0, 1]
    g = geometry
    kinds = [1] * n_rods + [2] * n_discs
    rng.shuffle(kinds)
    for kind in kinds:
        if kind == 1:
            half_length, radius = g.rod_length / 2, g.rod_radius
        else:
            half_length, radius = g.disc_thickness / 2, g.disc_radius
        for _ in range(50):
            u = np.array([1.0, 0.0, 0.0]) if orientation == "fixed" else _random_direction(rng)
            if g.tight_placement:  # the cylinder's bounding box
                half = half_length * np.abs(u) + radius * np.sqrt(np.clip(1 - u ** 2, 0, None))
            else:
                half = g.rod_length / 2 if kind == 1 else g.disc_radius
            margin = half + 1.5 * spacing.max()
            if np.any(extent < 2 * margin):
                break
            centre = rng.uniform(margin, extent - margin)
            d = coords - centre
            along = d @ u
            across = np.linalg.norm(d - along[..., None] * u, axis=-1)
            sd = _cylinder_distance(along, across, half_length, radius)
            mask = sd <= 0
            grown = _dilate(mask)
            if mask.any() and not (label[grown] > 0).any():
                label[mask] = kind
                shape_image = 0.5 * (1 - np.tanh(sd / g.edge_width)) if g.edge_width > 0 else mask
                occupancy = np.maximum(occupancy, shape_image)
                break
    noise = rng.normal(size=shape)
    if g.noise_smoothing > 0:
        from scipy.ndimage import gaussian_filter

        noise = gaussian_filter(noise, g.noise_smoothing / spacing, mode="wrap")
        noise /= noise.std()
    image = g.intensity * occupancy + g.noise * noise
    return image.astype(np.float32), label


def _cylinder_distance(along: np.ndarray, across: np.ndarray, half_length: float, radius: float) -> np.ndarray:
    """Signed distance (mm, negative inside) to a solid cylinder, from the axial and radial coordinates."""
    d_along, d_across = np.abs(along) - half_length, across - radius
    outside = np.hypot(np.maximum(d_along, 0), np.maximum(d_across, 0))
    return np.minimum(np.maximum(d_along, d_across), 0) + outside


def _dilate(mask: np.ndarray) -> np.ndarray:
    """One step of 6-connected dilation (no wrap-around at the border)."""
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask)


def write_rods_and_discs_dataset(
    raw_root: str | os.PathLike,
    dataset_id: int = 901,
    name: str = "RodsDiscs",
    num_train: int = 8,
    num_test: int = 2,
    shape: Sequence[int] = (32, 32, 32),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    train_orientation: str = "fixed",
    test_orientation: str = "fixed",
    n_rods: int = 2,
    n_discs: int = 2,
    seed: int = 0,
    overwrite: bool = False,
    geometry: RodsAndDiscs = RodsAndDiscs(),
) -> Path:
    """Write ``Dataset{dataset_id:03d}_{name}`` into ``raw_root`` and return its folder.

    The dataset is built in a temporary folder beside the target and moved into place, so a failed run
    leaves nothing half-written. An existing dataset is only replaced with ``overwrite=True``.
    """
    target = raw_dataset_target(raw_root, dataset_id, name, overwrite)
    rng = np.random.default_rng(seed)
    with atomic_folder(target, overwrite) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        splits = [("Tr", range(num_train), train_orientation), ("Ts", range(100, 100 + num_test), test_orientation)]
        for suffix, indices, orientation in splits:
            for i in indices:
                image, label = render_case(shape, spacing, rng, n_rods, n_discs, orientation, geometry)
                write_nifti(tmp / f"images{suffix}" / f"{name}_{i:03d}_0000.nii.gz", image, spacing)
                write_nifti(tmp / f"labels{suffix}" / f"{name}_{i:03d}.nii.gz", label, spacing)
        dataset_json = {
            "channel_names": {"0": "synthetic"},
            "labels": LABELS,
            "numTraining": num_train,
            "file_ending": ".nii.gz",
            "name": name,
            "description": f"Synthetic rods (1) and discs (2) of equal intensity; train {train_orientation}, "
                           f"test {test_orientation} orientation; written by nnunet_equivariant.synthetic",
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return target
