"""Dice against rotation angle: how robust is each trained nnU-Net model to the pose of the patient?

For every test case, plane and angle, the case is rotated about its centre in physical space (see
:mod:`nnunet_equivariant.evaluation.rotate`), every model predicts it with nnU-Net's own
``nnUNetPredictor`` (one predictor per model, kept in memory) and Dice is computed per label with
nnU-Net's evaluation code, counting only voxels inside the original field of view. At 0 degrees this is
exactly ``nnUNetv2_predict`` followed by ``nnUNetv2_evaluate_folder``.

Writes into the output folder: ``rotation_eval.csv`` (one row per model, plane, angle, case and label),
``dice_vs_angle.png`` and ``summary.md`` (see :mod:`nnunet_equivariant.evaluation.rotation_report`).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_equivariant.io import atomic_folder
from nnunet_equivariant.evaluation.rotate import PLANES, plane_rotation, rotate_case
from nnunet_equivariant.geometry import Geometry

__all__ = ["rotation_eval", "RotationEvalResult", "DEFAULT_ANGLES", "ModelFolder", "find_test_cases",
           "check_angles_and_planes", "check_same_task", "make_names_unique", "label_key_names", "CaseReaders",
           "case_readers", "load_predictor", "evaluate_rotations"]

DEFAULT_ANGLES = (0, 15, 30, 45, 60, 90, 120, 150, 180)


@dataclass
class ModelFolder:
    """A trained model folder ``Trainer__Plans__configuration`` and the files nnU-Net reads from it."""

    folder: Path
    name: str
    plans: dict
    dataset_json: dict

    @classmethod
    def load(cls, folder: str | os.PathLike, folds: Sequence[int | str], checkpoint: str) -> "ModelFolder":
        folder = Path(folder)
        for required in ("plans.json", "dataset.json"):
            if not (folder / required).is_file():
                raise FileNotFoundError(f"{folder} is not a trained nnU-Net model folder: {required} is missing")
        missing = [f"fold_{f}/{checkpoint}" for f in folds if not (folder / f"fold_{f}" / checkpoint).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: missing {', '.join(missing)} (choose the trained folds with -f)")
        plans = json.loads((folder / "plans.json").read_text())
        dataset_json = json.loads((folder / "dataset.json").read_text())
        return cls(folder, folder.name.split("__")[0], plans, dataset_json)


@dataclass
class RotationEvalResult:
    output: Path
    rows: list[dict] = field(default_factory=list)

    @property
    def csv(self) -> Path:
        return self.output / "rotation_eval.csv"

    @property
    def plot(self) -> Path:
        return self.output / "dice_vs_angle.png"

    @property
    def summary(self) -> Path:
        return self.output / "summary.md"


def find_test_cases(images: Path, labels: Path, file_ending: str, num_channels: int) -> list[tuple[str, list[str], str]]:
    """``(case, image files, label file)`` per case in nnU-Net raw layout (``case_0000.nii.gz`` ...)."""
    if not images.is_dir():
        raise FileNotFoundError(f"image folder {images} does not exist")
    if not labels.is_dir():
        raise FileNotFoundError(f"label folder {labels} does not exist; rotation_eval needs reference labels")
    pattern = re.compile(r"(.+)_(\d{4})" + re.escape(file_ending))
    channels: dict[str, list[str]] = {}
    for f in sorted(os.listdir(images)):
        match = pattern.fullmatch(f)
        if match:
            channels.setdefault(match.group(1), []).append(str(images / f))
    if not channels:
        raise ValueError(f"no images named CASE_XXXX{file_ending} in {images}")
    wrong = [c for c, files in channels.items() if len(files) != num_channels]
    if wrong:
        raise ValueError(f"cases {wrong[:5]} in {images} do not have the {num_channels} channel(s) the models need")
    unlabelled = [c for c in channels if not (labels / f"{c}{file_ending}").is_file()]
    if unlabelled:
        raise ValueError(f"{len(unlabelled)} test case(s) have no label in {labels}: {unlabelled[:5]}")
    return [(c, files, str(labels / f"{c}{file_ending}")) for c, files in channels.items()]


def rotation_eval(
    images: str | os.PathLike,
    labels: str | os.PathLike | None,
    model_folders: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    folds: Sequence[int | str] = (0, 1, 2, 3, 4),
    planes: Sequence[str] = ("axial",),
    angles: Sequence[float] = DEFAULT_ANGLES,
    checkpoint: str = "checkpoint_final.pth",
    device: str | None = None,
    step_size: float = 0.5,
    use_mirroring: bool = True,
    use_gaussian: bool = True,
    overwrite: bool = False,
) -> RotationEvalResult:
    """Rotate every test case, predict it with every model, write CSV, plot and summary to ``output``.

    ``images``: a folder of images in nnU-Net raw layout, or a raw dataset folder holding ``imagesTs`` and
    ``labelsTs`` (then ``labels`` may be ``None``). ``model_folders``: trained model folders
    (``Trainer__Plans__configuration``) of the same dataset and label set, each with the given ``folds``.
    ``angles`` in degrees within [-180, 180]; ``planes`` among axial, coronal, sagittal.
    ``step_size``, ``use_mirroring`` and ``use_gaussian`` are nnU-Net's sliding-window settings; the
    defaults are ``nnUNetv2_predict``'s. ``use_gaussian=False`` weights overlapping windows uniformly: nnU-Net's
    Gaussian is centred on voxel ``patch // 2`` (half a voxel off-centre for even patch sizes) and kept in
    float16, so with it even an exactly equivariant network is not predicted exactly equivariantly.
    Arguments, models, folds, the test cases' files and the first case's geometry are checked before the
    first prediction; a later case whose label does not match its image stops the run with both file
    names. ``output`` (unless empty) is only replaced with ``overwrite``, atomically.
    """
    images, labels, output = Path(images), Path(labels) if labels is not None else None, Path(output)
    if labels is None and (images / "imagesTs").is_dir():
        images, labels = images / "imagesTs", images / "labelsTs"
    if labels is None:
        raise ValueError("no label folder given: rotation_eval needs reference labels (-l, or a dataset folder "
                         "with imagesTs and labelsTs)")
    angles = check_angles_and_planes(angles, planes)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {output} is not empty; pass --overwrite to replace it")
    if not model_folders:
        raise ValueError("give at least one model folder")
    models = [ModelFolder.load(m, folds, checkpoint) for m in model_folders]
    check_same_task(models)
    make_names_unique(models)
    reference = models[0]
    cases = find_test_cases(images, labels, reference.dataset_json["file_ending"],
                            len(reference.dataset_json["channel_names"]))
    readers = case_readers(reference, cases)

    predictors = [load_predictor(m, folds, checkpoint, device, step_size, use_mirroring, use_gaussian)
                  for m in models]
    rows = evaluate_rotations(cases, models, predictors, readers, planes, angles)
    return _write_outputs(output, rows, models, folds, len(cases), overwrite)


def check_angles_and_planes(angles: Sequence[float], planes: Sequence[str]) -> list[float]:
    """The angles as floats; ``ValueError`` naming the bad ones if any is outside [-180, 180] or a plane unknown."""
    angles = [float(a) for a in angles]
    bad_angles = [a for a in angles if not -180 <= a <= 180]
    if bad_angles or not angles:
        raise ValueError(f"angles must be a non-empty list of degrees in [-180, 180], got {bad_angles or angles}")
    bad_planes = [p for p in planes if p not in PLANES]
    if bad_planes or not planes:
        raise ValueError(f"planes must be among {sorted(PLANES)}, got {list(planes)}")
    return angles


def check_same_task(models: Sequence[ModelFolder]) -> None:
    """``ValueError`` naming both folders unless every model has the first one's label set, input channels,
    file type, dataset and image reader: their predictions of one test case can then be compared."""
    first = models[0]
    for m in models[1:]:
        for key, what in (("labels", "label set"), ("channel_names", "input channels"), ("file_ending", "file type")):
            if m.dataset_json.get(key) != first.dataset_json.get(key):
                raise ValueError(f"models differ in {what}: {first.folder} has {first.dataset_json.get(key)}, "
                                 f"{m.folder} has {m.dataset_json.get(key)}")
        if m.plans["dataset_name"] != first.plans["dataset_name"]:
            raise ValueError(f"models were trained on different datasets: {first.plans['dataset_name']} "
                             f"({first.folder}) and {m.plans['dataset_name']} ({m.folder})")
        if m.plans["image_reader_writer"] != first.plans["image_reader_writer"]:
            raise ValueError(f"models read images differently: {first.plans['image_reader_writer']} and "
                             f"{m.plans['image_reader_writer']}")


def make_names_unique(models: Sequence[ModelFolder]) -> None:
    """Give every model a unique ``name`` in place: trainer names label the plot and the CSV rows; where they
    clash, the folder name, then the folder name and the model's position."""
    for attempt in (lambda i, m: m.folder.name, lambda i, m: f"{m.folder.name} ({i + 1})"):
        names = [m.name for m in models]
        if len(set(names)) == len(names):
            return
        for i, m in enumerate(models):
            if names.count(m.name) > 1:
                m.name = attempt(i, m)


def label_key_names(dataset_json: dict) -> dict[str, str]:
    """nnU-Net's label keys (``"1"``, or ``"(1, 2)"`` for a region, as in ``summary.json``) -> names in
    ``dataset.json``."""
    names = {}
    for name, value in dataset_json["labels"].items():
        key = value if isinstance(value, int) else tuple(value) if len(value) > 1 else value[0]
        names[str(key)] = name
    return names


@dataclass(frozen=True)
class CaseReaders:
    """How the test cases of a model are read and scored, as nnU-Net does it.

    ``image_reader``: the plans' reader (what ``nnUNetv2_predict`` reads images with); ``label_reader``:
    the reader nnU-Net's evaluation picks for the label files; ``regions``: the foreground labels (or
    regions) Dice is computed for, ``label_names`` their names by key (``"1"``, ``"(1, 2)"``);
    ``ignore_label``: voxels not scored (``None``: none).
    """

    image_reader: object
    label_reader: object
    regions: list
    label_names: dict[str, str]
    ignore_label: int | None


def case_readers(model: ModelFolder, cases: Sequence[tuple[str, list[str], str]]) -> CaseReaders:
    """The readers and labels of ``model`` for ``cases`` (``find_test_cases``), after checking that the first
    case reads as a 3D image with a physical geometry (``ValueError`` naming its file), before any model is
    loaded."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(model.plans)
    reader = plans_manager.image_reader_writer_class()
    label_reader = determine_reader_writer_from_dataset_json(model.dataset_json, cases[0][2], verbose=False)()
    label_manager = plans_manager.get_label_manager(model.dataset_json)
    regions = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels
    names = label_key_names(model.dataset_json)
    label_names = {str(r): names.get(str(r), str(r)) for r in regions}
    Geometry.from_nnunet(*reader.read_images(cases[0][1]), cases[0][1][0])
    return CaseReaders(reader, label_reader, regions, label_names, label_manager.ignore_label)


def load_predictor(model: ModelFolder, folds: Sequence[int | str], checkpoint: str = "checkpoint_final.pth",
                   device: str | None = None, step_size: float = 0.5, use_mirroring: bool = True,
                   use_gaussian: bool = True):
    """nnU-Net's ``nnUNetPredictor`` with the fold ensemble of ``model``, as ``nnUNetv2_predict`` builds it
    (``device``: default ``cuda`` if available; the sliding-window settings as in ``rotation_eval``)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    predictor = nnUNetPredictor(tile_step_size=step_size, use_gaussian=use_gaussian, use_mirroring=use_mirroring,
                                perform_everything_on_device=device.type == "cuda", device=device,
                                verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model.folder), list(folds), checkpoint)
    return predictor


def _dice_rows(reference, prediction, fov, readers: CaseReaders) -> list[dict]:
    """nnU-Net's per-label counts and Dice (``evaluate_predictions.compute_metrics``) inside the FOV."""
    from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn, region_or_label_to_mask

    ignore = ~fov[None]
    if readers.ignore_label is not None:
        ignore = ignore | (reference == readers.ignore_label)
    rows = []
    for r in readers.regions:
        tp, fp, fn, _ = compute_tp_fp_fn_tn(region_or_label_to_mask(reference, r),
                                            region_or_label_to_mask(prediction, r), ignore)
        dice = np.nan if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        rows.append({"label": str(r), "label_name": readers.label_names[str(r)], "dice": float(dice),
                     "tp": int(tp), "fp": int(fp), "fn": int(fn), "fov_voxels": int(fov.sum())})
    return rows


def evaluate_rotations(cases: Sequence[tuple[str, list[str], str]], models: Sequence[ModelFolder], predictors,
                       readers: CaseReaders, planes: Sequence[str], angles: Sequence[float]) -> list[dict]:
    """Rotate every case (``find_test_cases``) by every angle in every plane, predict it with each of
    ``predictors`` (one per model, anything with nnU-Net's ``predict_single_npy_array``), and score it.

    Returns one row per plane, angle, case, model and label: ``plane``, ``angle_deg``, ``case``, ``model``
    (its ``name``), ``label``, ``label_name``, ``dice`` (NaN where the label is absent from both), ``tp``,
    ``fp``, ``fn``, ``fov_voxels``. A rotation reached in several planes (0 degrees) is predicted once.
    ``ValueError`` naming both files for a case whose label does not match its image.
    """
    from tqdm import tqdm

    rows = []
    with tqdm(total=len(cases) * len(planes) * len(angles), desc="rotation_eval", unit="rotation") as bar:
        for case, image_files, label_file in cases:
            image, properties = readers.image_reader.read_images(image_files)
            label, _ = readers.label_reader.read_seg(label_file)
            if label.shape[1:] != image.shape[1:]:
                raise ValueError(f"{label_file}: label shape {label.shape[1:]} differs from the shape "
                                 f"{image.shape[1:]} of its image {image_files[0]}")
            geometry = Geometry.from_nnunet(image, properties, image_files[0])
            done: dict[bytes, list[dict]] = {}  # one prediction per distinct rotation (0 deg in every plane)
            for plane in planes:
                for angle in angles:
                    rotation = plane_rotation(plane, angle)
                    key = np.round(rotation, 12).tobytes()
                    if key not in done:
                        bar.set_postfix_str(f"{case} {plane} {angle:g} deg")
                        image_r, label_r, fov = rotate_case(image, label, geometry, rotation)
                        done[key] = []
                        for model, predictor in zip(models, predictors):
                            prediction = predictor.predict_single_npy_array(image_r, properties)
                            for row in _dice_rows(label_r, prediction[None], fov, readers):
                                done[key].append({"model": model.name, **row})
                    rows += [{"plane": plane, "angle_deg": angle, "case": case, **r} for r in done[key]]
                    bar.update()
    return rows


def _write_outputs(output: Path, rows, models, folds, num_cases, overwrite) -> RotationEvalResult:
    from nnunet_equivariant.evaluation.rotation_report import write_csv, write_plot, write_summary

    empty = output.is_dir() and not any(output.iterdir())  # an empty folder may be replaced without --overwrite
    with atomic_folder(output, overwrite or empty) as tmp:
        result = RotationEvalResult(tmp, rows)
        write_csv(rows, result.csv)
        write_plot(rows, result.plot)
        write_summary(rows, result.summary, models=[(m.name, str(m.folder)) for m in models], folds=list(folds),
                      num_cases=num_cases, files=(result.csv.name, result.plot.name))
    return RotationEvalResult(output, rows)
