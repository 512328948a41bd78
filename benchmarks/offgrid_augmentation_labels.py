"""How far the off-grid rotation augmentation's labels are from the label maps a scan in that pose has.

Issue 17's benchmark renders every test pose from the subject itself (its 1 mm label map rotated, then
voxelised at the test spacing); training can only rotate the label map it has, at its own spacing. This
script does the second for the 0-degree test label maps of an ``offgrid_training.py`` output folder
(``<output>/test_*/labels/*z000.nii.gz``) with nnU-Net's own ``SpatialTransform`` (batchgeneratorsv2, as
:class:`~nnunet_equivariant.training.offgrid_rotation.OffGridRotationMixin` uses it: one axis, no scaling,
``mode_seg`` ``"bilinear"``, nnU-Net's, the argmax of the trilinearly interpolated one-hot map, or
``"nearest"``) and compares the result with the rendered label map of the same subject in that pose: per
structure the volume against the 0-degree map (augmented and rendered) and the Dice between augmented and
rendered. The sense of rotation is the one that matches the rendering (batchgeneratorsv2 samples
``in(R p)``, the rendering shows ``subject(R^T p)``: the angle is negated).

Usage: ``python benchmarks/offgrid_augmentation_labels.py /work/runs/aseg3mm_t96 [--subjects 48]
[--angles 15 30 45] [--axes z]``; prints one markdown table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from offgrid_training import _read_nifti


def augmented_labels(labels: np.ndarray, axis: str, degrees: float, mode_seg: str) -> np.ndarray:
    """``labels`` (x, y, z) rotated by ``degrees`` about ``axis`` with nnU-Net's ``SpatialTransform``
    (the same patch size, centred, no scaling; outside the map: nnU-Net's padding label -1), in the sense
    of the benchmark's rendering (``out(p) = labels(R^T p)``)."""
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    index = "xyz".index(axis)
    angle = -np.deg2rad(degrees)
    transform = SpatialTransform(labels.shape, 0, False, p_rotation=1,
                                 rotation=lambda *args, dim=0, **kwargs: angle if dim == index else 0.0,
                                 p_scaling=0, mode_seg=mode_seg, border_mode_seg="constant", padding_value_seg=-1)
    segmentation = torch.from_numpy(labels.astype(np.int16))[None]
    out = transform(image=torch.zeros(1, *labels.shape), segmentation=segmentation)["segmentation"][0]
    return out.numpy()


def compare(output: Path, subjects: int, angles, axes, modes=("bilinear", "nearest")) -> list[dict]:
    """One row per mode, axis, angle and structure: voxels of the 0-degree map, of its augmentation and of
    the rendered map in that pose (summed over ``subjects`` test subjects), and the Dice of augmentation
    against rendering."""
    (test,) = sorted(output.glob("test_*"))
    names = {int(v): k for k, v in json.loads(next(output.glob("nnUNet_raw/*/dataset.json")).read_text())
             ["labels"].items() if int(v) > 0}
    cases = sorted(test.glob("labels/*z000.nii.gz"))[:subjects]
    if not cases:
        raise ValueError(f"{test / 'labels'}: no 0-degree test label maps (*z000.nii.gz)")
    sums = {}
    for case in cases:
        stem = case.name[:-len("z000.nii.gz")]
        reference = _read_nifti(case)
        reference_voxels = {value: (reference == value).sum() for value in names}
        for axis in axes:
            for degrees in angles:
                rendered = _read_nifti(test / "labels" / f"{stem}{axis}{int(degrees):03d}.nii.gz")
                for mode in modes:
                    augmented = augmented_labels(reference, axis, degrees, mode)
                    for value, name in names.items():
                        a, r = augmented == value, rendered == value
                        key = (mode, axis, degrees, name)
                        counts = np.array([reference_voxels[value], a.sum(), r.sum(), (a & r).sum()])
                        sums[key] = sums.get(key, 0) + counts
    return [{"mode_seg": mode, "axis": axis, "angle": degrees, "structure": name, "voxels_0": int(c[0]),
             "augmented": int(c[1]), "rendered": int(c[2]),
             "dice": round(2 * c[3] / (c[1] + c[2]), 3) if c[1] + c[2] else float("nan")}
            for (mode, axis, degrees, name), c in sums.items()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="an offgrid_training.py --anatomy aseg output folder")
    parser.add_argument("--subjects", type=int, default=48)
    parser.add_argument("--angles", type=float, nargs="+", default=[15, 30, 45])
    parser.add_argument("--axes", nargs="+", default=["z"], choices=["x", "y", "z"])
    args = parser.parse_args(argv)
    rows = compare(args.output, args.subjects, args.angles, args.axes)
    print("| mode_seg | axis | angle | structure | augmented / 0 degrees | rendered / 0 degrees "
          "| Dice augmented vs rendered |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode_seg']} | {r['axis']} | {r['angle']:g} | {r['structure']} | "
              f"{r['augmented'] / r['voxels_0']:.3f} | {r['rendered'] / r['voxels_0']:.3f} | {r['dice']:.3f} |")


if __name__ == "__main__":
    main()
