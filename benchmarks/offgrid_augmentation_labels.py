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

``--images`` does the same for the images, without noise: test subjects of the real-anatomy benchmark
rendered at ``--spacing`` (3 mm) without noise and bias field, the 0-degree image rotated with nnU-Net's
``SpatialTransform`` (trilinear: ``mode_image`` ``"bilinear"``) and with a cubic B-spline (scipy's
``affine_transform``, order 3), each against the rendering in that pose: the root mean square difference in
the field (within 12 voxels of the centre) and near the two smallest structures (amygdala and accumbens,
dilated by a voxel), and how much each interpolation keeps of white noise (its standard deviation after, over
before: a scan in that pose keeps all of it).

Usage: ``python benchmarks/offgrid_augmentation_labels.py /work/runs/aseg3mm_t96 [--subjects 48]
[--angles 15 30 45] [--axes z]``, or ``python benchmarks/offgrid_augmentation_labels.py --images
[--subjects 8]``; prints one markdown table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from offgrid_training import _read_nifti


def _rotating_transform(shape, axis: str, degrees: float, **kwargs):
    """nnU-Net's ``SpatialTransform`` for ``shape`` that rotates every sample by ``degrees`` about ``axis`` in
    the rendering's sense (batchgeneratorsv2 samples ``in(R p)``: the angle is negated), centred, no scaling."""
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    index, angle = "xyz".index(axis), -np.deg2rad(degrees)
    return SpatialTransform(shape, 0, False, p_rotation=1, p_scaling=0,
                            rotation=lambda *args, dim=0, **_: angle if dim == index else 0.0, **kwargs)


def augmented_labels(labels: np.ndarray, axis: str, degrees: float, mode_seg: str) -> np.ndarray:
    """``labels`` (x, y, z) rotated by ``degrees`` about ``axis`` with nnU-Net's ``SpatialTransform``
    (the same patch size, centred, no scaling; outside the map: nnU-Net's padding label -1), in the sense
    of the benchmark's rendering (``out(p) = labels(R^T p)``)."""
    transform = _rotating_transform(labels.shape, axis, degrees, mode_seg=mode_seg, border_mode_seg="constant",
                                    padding_value_seg=-1)
    segmentation = torch.from_numpy(labels.astype(np.int16))[None]
    out = transform(image=torch.zeros(1, *labels.shape), segmentation=segmentation)["segmentation"][0]
    return out.numpy()


def augmented_image(image: np.ndarray, axis: str, degrees: float, interpolation: str) -> np.ndarray:
    """``image`` (x, y, z) rotated by ``degrees`` about ``axis`` in the rendering's sense (as
    :func:`augmented_labels`): ``"trilinear"`` with nnU-Net's ``SpatialTransform`` (its ``mode_image``
    ``"bilinear"``, zeros outside), ``"cubic"`` a cubic B-spline (``scipy.ndimage.affine_transform``, order 3,
    the edge voxels continued outside)."""
    if interpolation == "trilinear":
        transform = _rotating_transform(image.shape, axis, degrees)
        return transform(image=torch.from_numpy(np.asarray(image, dtype=np.float32))[None])["image"][0].numpy()
    if interpolation == "cubic":
        from scipy.ndimage import affine_transform
        from scipy.spatial.transform import Rotation

        inverse = Rotation.from_euler(axis, degrees, degrees=True).as_matrix().T  # out(p) = image(R^T p)
        centre = (np.array(image.shape) - 1) / 2
        return affine_transform(np.asarray(image, dtype=np.float64), inverse, offset=centre - inverse @ centre,
                                order=3, mode="nearest")
    raise ValueError(f"interpolation must be 'trilinear' or 'cubic', got {interpolation!r}")


def image_errors(subjects: int, angles, axes, spacing=(3.0, 3.0, 3.0), shape=(32, 32, 32),
                 interpolations=("trilinear", "cubic")) -> list[dict]:
    """One row per interpolation, axis and angle: root mean square difference between the rotated 0-degree
    rendering and the rendering in that pose (noise- and bias-free; in the field and near the amygdala and
    accumbens, mean over ``subjects`` test subjects of the real-anatomy benchmark) and the standard deviation
    of rotated white noise over its own (module docstring)."""
    from offgrid_training import _rotation, aseg_anatomy
    from scipy.ndimage import binary_dilation

    from nnunet_equivariant.real_anatomy import LABELS, render_subject
    from nnunet_equivariant.synthetic_anatomy import AnatomyStyle

    n_train = 16
    population = aseg_anatomy(spacing, ["MNI152NLin2009cAsym"], ["MNI152NLin6Asym"]).subjects(n_train, subjects, 0)
    style = AnatomyStyle(psf_sigma=tuple(0.425 * float(s) for s in spacing), noise=0.0, bias=0.0)
    centre = (np.array(shape) - 1) / 2
    field = np.linalg.norm(np.indices(shape).transpose(1, 2, 3, 0) - centre, axis=-1) < 12
    noise = np.random.default_rng(0).normal(size=shape)
    kept = {(i, a, t): augmented_image(noise, a, t, i)[field].std() / noise[field].std()  # the same for every subject
            for i in interpolations for a in axes for t in angles}
    sums = {}
    for subject in population[n_train:]:
        upright, _ = render_subject(subject, shape, spacing, None, style)
        for axis in axes:
            for degrees in angles:
                posed, labels = render_subject(subject, shape, spacing, _rotation(axis, degrees), style)
                small = binary_dilation(np.isin(labels, [LABELS["amygdala"], LABELS["accumbens"]])) & field
                for interpolation in interpolations:
                    difference = augmented_image(upright, axis, degrees, interpolation) - posed
                    key = (interpolation, axis, degrees)
                    values = np.array([np.sqrt(np.mean(difference[field] ** 2)),
                                       np.sqrt(np.mean(difference[small] ** 2)), kept[key]])
                    sums[key] = sums.get(key, 0) + values / subjects
    return [{"interpolation": i, "axis": a, "angle": t, "rms_field": round(float(v[0]), 4),
             "rms_small_structures": round(float(v[1]), 4), "noise_kept": round(float(v[2]), 3)}
            for (i, a, t), v in sums.items()]


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
    parser.add_argument("output", type=Path, nargs="?", help="an offgrid_training.py --anatomy aseg output folder")
    parser.add_argument("--subjects", type=int, default=48)
    parser.add_argument("--angles", type=float, nargs="+", default=[15, 30, 45])
    parser.add_argument("--axes", nargs="+", default=["z"], choices=["x", "y", "z"])
    parser.add_argument("--images", action="store_true", help="the images instead (rendered here, no output folder)")
    parser.add_argument("--spacing", type=float, nargs=3, default=[3.0, 3.0, 3.0], help="--images: mm")
    args = parser.parse_args(argv)
    if args.images:
        rows = image_errors(args.subjects, args.angles, args.axes, tuple(args.spacing))
        print("| interpolation | axis | angle | rms difference from the rendering (field) | near amygdala and "
              "accumbens | white noise kept |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['interpolation']} | {r['axis']} | {r['angle']:g} | {r['rms_field']:.4f} | "
                  f"{r['rms_small_structures']:.4f} | {r['noise_kept']:.3f} |")
        return
    if args.output is None:
        parser.error("give an offgrid_training.py output folder, or --images")
    rows = compare(args.output, args.subjects, args.angles, args.axes)
    print("| mode_seg | axis | angle | structure | augmented / 0 degrees | rendered / 0 degrees "
          "| Dice augmented vs rendered |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode_seg']} | {r['axis']} | {r['angle']:g} | {r['structure']} | "
              f"{r['augmented'] / r['voxels_0']:.3f} | {r['rendered'] / r['voxels_0']:.3f} | {r['dice']:.3f} |")


if __name__ == "__main__":
    main()
