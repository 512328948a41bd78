"""``nnunet-equivariant compare``: accuracy, pose robustness and cost of several trainers on one dataset, in
one report.

For each trainer (with its plans; one ``-p`` for all or one per trainer) and the given configuration:

1. **Models**: the trained folders ``nnUNet_results/DatasetX/Trainer__Plans__configuration``. With
   ``train=True`` every fold without ``checkpoint_final.pth`` is trained first with ``nnUNetv2_train``
   (nnU-Net's ``run_training_entry`` in a child process, which also runs nnU-Net's final validation),
   resuming (``--c``) from ``checkpoint_latest.pth`` where one exists; a fold that fails is reported and the
   rest goes on.
2. **Accuracy**: nnU-Net's cross-validation result of each fold, ``fold_X/validation/summary.json``
   (Dice per label and ``foreground_mean``), and its mean and standard deviation over the folds.
3. **Pose robustness**: :mod:`~nnunet_equivariant.evaluation.rotation_eval` on the dataset's test cases
   (``imagesTs`` / ``labelsTs``): every case rotated in physical space, predicted by each trainer's fold
   ensemble with ``nnUNetv2_predict``'s settings, Dice per label inside the field of view; the worst drop of
   mean foreground Dice from 0 degrees.
4. **Cost**, measured in this process for every trainer (:mod:`~nnunet_equivariant.evaluation.cost`):
   parameters; train-step time and peak memory at the plans' patch and batch size; epoch time and total
   training time from nnU-Net's training logs; predict time per case (median over every prediction of
   step 3, each trainer with its own test-time mirroring, the models taking turns case by case). Ratios
   against the first trainer.

Writes into ``output`` (atomically; an existing folder only with ``overwrite``): ``report.md``,
``comparison.csv`` (one row per trainer, every number of the report), ``accuracy_per_fold.csv``,
``rotation_eval.csv`` (rotation_eval's rows), ``rotation_summary.md``, ``dice_vs_angle.png``,
``dice_per_fold.png`` and ``cost.png`` (see :mod:`~nnunet_equivariant.evaluation.compare_report`).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_equivariant.io import atomic_folder

__all__ = ["compare", "CompareResult", "TrainerEntry", "DEFAULT_ANGLES", "CHECKPOINT"]

DEFAULT_ANGLES = (0, 15, 30, 45, 60, 90)
CHECKPOINT = "checkpoint_final.pth"


@dataclass
class TrainerEntry:
    """One trainer of the comparison and everything measured for it."""

    trainer: str
    plans: str
    folder: Path
    name: str = ""
    folds: list = field(default_factory=list)  # folds with checkpoint_final.pth after training
    failures: dict = field(default_factory=dict)  # fold -> why it could not be trained
    notes: list = field(default_factory=list)
    model: object = None  # rotation_eval.ModelFolder, None when no fold is trained
    accuracy: list = field(default_factory=list)  # {"model", "fold", "label", "label_name", "dice"}
    times: dict = field(default_factory=dict)  # fold -> cost.TrainingTimes
    predict_seconds: list = field(default_factory=list)
    tta_passes: int | None = None
    cost: object = None  # cost.TrainStepCost
    network: str = ""  # network_description of the trainer class


@dataclass
class CompareResult:
    output: Path
    entries: list
    rows: list  # comparison.csv rows
    rotation_rows: list

    @property
    def report(self) -> Path:
        return self.output / "report.md"

    @property
    def csv(self) -> Path:
        return self.output / "comparison.csv"


class _TimedPredictor:
    """An ``nnUNetPredictor`` that records the wall time of every ``predict_single_npy_array`` call."""

    def __init__(self, predictor, sync):
        self.predictor, self.sync, self.seconds = predictor, sync, []

    def predict_single_npy_array(self, *args, **kwargs):
        self.sync()
        start = time.perf_counter()
        result = self.predictor.predict_single_npy_array(*args, **kwargs)
        self.sync()
        self.seconds.append(time.perf_counter() - start)
        return result


def compare(
    dataset: str | int,
    trainers: Sequence[str],
    output: str | os.PathLike,
    plans: Sequence[str] = ("nnUNetPlans",),
    configuration: str = "3d_fullres",
    folds: Sequence[int | str] = (0, 1, 2, 3, 4),
    train: bool = False,
    planes: Sequence[str] = ("axial",),
    angles: Sequence[float] = DEFAULT_ANGLES,
    device: str | None = None,
    overwrite: bool = False,
    cost_repeats: int = 3,
    command_line: str | None = None,
) -> CompareResult:
    """Compare ``trainers`` on ``dataset`` (id or ``DatasetXXX_Name``) and write the report to ``output``.

    ``plans``: one plans identifier for every trainer or one per trainer. ``angles`` (degrees, must include
    0) and ``planes`` as in ``rotation_eval``. ``device``: default ``cuda`` if available. ``cost_repeats``:
    timed train steps per trainer (median). ``command_line``: how the comparison was asked for, as the report
    shows it (default: this call with its arguments). Every input is checked before the first training or
    prediction: unknown trainer, dataset or plans, missing folds without ``train``, no test cases, models of
    different datasets / label sets / configurations and an existing ``output`` raise an error naming the
    value, folder or file.
    """
    import torch

    from nnunet_equivariant.evaluation.rotation_eval import check_angles_and_planes, find_test_cases

    output = Path(output)
    trainers, plans = list(trainers), list(plans)
    if not trainers:
        raise ValueError("give at least one trainer (-tr)")
    if len(plans) == 1:
        plans = plans * len(trainers)
    if len(plans) != len(trainers):
        raise ValueError(f"give one plans identifier for all trainers or one per trainer: {len(trainers)} trainers "
                         f"{trainers}, {len(plans)} plans {plans}")
    pairs = list(zip(trainers, plans))
    duplicates = sorted({p for p in pairs if pairs.count(p) > 1})
    if duplicates:
        raise ValueError(f"trainer and plans listed twice: {duplicates}")
    folds = _normalise_folds(folds)
    angles = check_angles_and_planes(angles, planes)
    if 0.0 not in angles:
        raise ValueError(f"angles must include 0 (the drop is measured from 0 degrees), got {angles}")
    if cost_repeats < 1:
        raise ValueError(f"cost_repeats must be at least 1, got {cost_repeats}")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {output} is not empty; pass --overwrite to replace it")

    dataset_name, raw_dataset, raw_json, preprocessed = _dataset(dataset)
    try:
        cases = find_test_cases(raw_dataset / "imagesTs", raw_dataset / "labelsTs", raw_json["file_ending"],
                                len(raw_json["channel_names"]))
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"no usable test cases for the pose-robustness part of compare in {raw_dataset}: {e}") from e
    trainer_classes = {t: _trainer_class(t) for t in dict.fromkeys(trainers)}
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    entries = [TrainerEntry(t, p, _model_folder(dataset_name, t, p, configuration),
                            network=network_description(trainer_classes[t])) for t, p in pairs]

    for e in entries:
        _check_model_folder(e.folder, dataset_name, raw_json, configuration)
    missing = {id(e): [f for f in folds if not (e.folder / f"fold_{f}" / CHECKPOINT).is_file()] for e in entries}
    if any(missing.values()):
        if not train:
            lines = [f"{e.folder}: fold(s) {', '.join(map(str, missing[id(e)]))} have no {CHECKPOINT}"
                     for e in entries if missing[id(e)]]
            raise FileNotFoundError("missing trained folds (pass --train to train them, or choose folds with -f):\n  "
                                    + "\n  ".join(lines))
        for e in entries:
            if missing[id(e)]:
                _check_preprocessed_plans(preprocessed, e.plans, configuration)
        _train_missing(entries, missing, dataset_name, configuration, device)

    for e in entries:
        e.folds = [f for f in folds if (e.folder / f"fold_{f}" / CHECKPOINT).is_file()]
    trained = [e for e in entries if e.folds]
    if not trained:
        raise FileNotFoundError("no trainer has a trained fold: " + "; ".join(
            f"{e.trainer} fold {f}: {why}" for e in entries for f, why in e.failures.items()))
    _load_models(entries, raw_json, configuration)
    for e in trained:
        _read_folds(e, configuration, dataset_name)

    rotation_rows = _rotation(trained, cases, planes, angles, device)
    _measure_cost(entries, trainer_classes, preprocessed, configuration, device, cost_repeats)

    from nnunet_equivariant.evaluation import compare_report

    context = compare_report.ReportContext(
        dataset=dataset_name, configuration=configuration, folds=folds, planes=list(planes), angles=angles,
        num_cases=len(cases), device=str(device), cost_repeats=cost_repeats,
        command_line=command_line or (
            f"compare({dataset!r}, {trainers!r}, {str(output)!r}, plans={plans!r}, configuration={configuration!r}, "
            f"folds={folds!r}, train={train!r}, planes={list(planes)!r}, angles={angles!r}, "
            f"cost_repeats={cost_repeats!r})"))
    rows = compare_report.comparison_rows(entries, rotation_rows, context)
    empty = output.is_dir() and not any(output.iterdir())
    with atomic_folder(output, overwrite or empty) as tmp:
        compare_report.write_all(tmp, entries, rows, rotation_rows, context)
    print(f"[compare] report: {output / 'report.md'}")
    return CompareResult(output, entries, rows, rotation_rows)


def _normalise_folds(folds) -> list:
    result = []
    for f in folds:
        if str(f) == "all":
            result.append("all")
        elif str(f).isdigit():
            result.append(int(f))
        else:
            raise ValueError(f"folds must be integers or 'all', got {f!r}")
    if not result:
        raise ValueError("give at least one fold (-f)")
    return list(dict.fromkeys(result))


def _dataset(dataset):
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw, nnUNet_results
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    for var in (nnUNet_raw, nnUNet_results):
        if not var.is_set():
            raise ValueError(f"{var.env_var_name} is not set: compare reads nnU-Net's folders from the environment")
    try:
        name = maybe_convert_to_dataset_name(str(dataset) if not str(dataset).isdigit() else int(dataset))
    except RuntimeError as e:
        raise ValueError(f"dataset {dataset!r} not found in nnUNet_raw, nnUNet_preprocessed or nnUNet_results: {e}") from e
    raw = Path(nnUNet_raw.get()) / name
    if not (raw / "dataset.json").is_file():
        raise FileNotFoundError(f"{raw / 'dataset.json'} does not exist: compare needs the raw dataset (its test cases)")
    preprocessed = Path(nnUNet_preprocessed.get()) / name if nnUNet_preprocessed.is_set() else None
    return name, raw, json.loads((raw / "dataset.json").read_text()), preprocessed


def network_description(trainer_class) -> str:
    """What decides a trainer's network, for the report: its ``E3nnSpec`` (the fields that differ from the
    default recipe), its mirror symmetry, or the plans' network for trainers that add none."""
    from ..networks.e3nn_spec import E3nnSpec

    spec = getattr(trainer_class, "spec", None)
    if isinstance(spec, E3nnSpec):
        return spec.describe()
    symmetry = getattr(trainer_class, "symmetry", None)
    return f"mirror-symmetric ({symmetry})" if symmetry not in (None, "none") else "the plans' network"


def _trainer_class(name: str):
    import contextlib
    import io

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            found = recursive_find_trainer_class_by_name(name)
    except Exception:  # nnU-Net raises RuntimeError when nothing matches
        found = None
    if found is None:
        raise ValueError(f"trainer {name!r} not found in nnunetv2 or the folders of nnUNet_extTrainer "
                         f"({os.environ.get('nnUNet_extTrainer', 'unset')})")
    return found


def _model_folder(dataset_name: str, trainer: str, plans: str, configuration: str) -> Path:
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    return Path(get_output_folder(dataset_name, trainer, plans, configuration))


def _check_preprocessed_plans(preprocessed: Path | None, plans: str, configuration: str) -> dict:
    if preprocessed is None:
        raise ValueError("nnUNet_preprocessed is not set: training needs the preprocessed dataset")
    path = preprocessed / f"{plans}.json"
    if not path.is_file():
        raise FileNotFoundError(f"plans {path} do not exist (plan and preprocess the dataset with these plans first)")
    plans_dict = json.loads(path.read_text())
    if configuration not in plans_dict.get("configurations", {}):
        raise ValueError(f"configuration {configuration!r} is not in {path} "
                         f"(it has {sorted(plans_dict.get('configurations', {}))})")
    return plans_dict


def _train_missing(entries, missing, dataset_name, configuration, device) -> None:
    """Train each missing fold with ``nnUNetv2_train`` (then nnU-Net's final validation), resuming from
    ``checkpoint_latest.pth``; record a failure and go on."""
    jobs = [(e, f) for e in entries for f in missing[id(e)]]
    for i, (e, fold) in enumerate(jobs):
        resume = (e.folder / f"fold_{fold}" / "checkpoint_latest.pth").is_file()
        print(f"[compare] training {e.trainer} ({e.plans}, {configuration}) fold {fold}"
              f"{' (resuming)' if resume else ''}: {i + 1}/{len(jobs)}", flush=True)
        failure = _train_fold(dataset_name, configuration, fold, e.trainer, e.plans, device, resume)
        if failure is None and not (e.folder / f"fold_{fold}" / CHECKPOINT).is_file():
            failure = f"training ended without {CHECKPOINT}"
        if failure is not None:
            e.failures[fold] = failure
            print(f"[compare] {e.trainer} fold {fold} failed to train: {failure}", file=sys.stderr, flush=True)


def _train_fold(dataset_name: str, configuration: str, fold, trainer: str, plans: str, device, resume: bool):
    """``nnUNetv2_train`` (nnU-Net's ``run_training_entry``, with this interpreter) in a child process, so a
    crash or an out-of-memory kill costs one fold and the training's memory is returned before the cost
    measurement. Its output goes to the console; returns ``None`` or why it failed."""
    import collections
    import subprocess

    cmd = [sys.executable, "-m", "nnunetv2.run.run_training", dataset_name, configuration, str(fold), "-tr", trainer,
           "-p", plans, "-device", device.type, *(["--c"] if resume else [])]
    tail = collections.deque(maxlen=30)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            tail.append(line.rstrip())
    if proc.returncode == 0:
        return None
    last = next((line for line in reversed(tail) if line.strip()), "")
    return f"nnUNetv2_train exited with code {proc.returncode}: {last}"


def _check_model_folder(folder: Path, dataset_name: str, raw_json: dict, configuration: str) -> None:
    """An existing model folder must belong to this dataset, its label set and the configuration."""
    if not (folder / "plans.json").is_file() or not (folder / "dataset.json").is_file():
        return  # not trained yet (or not at all): ModelFolder.load names what is missing
    plans = json.loads((folder / "plans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    if plans.get("dataset_name") != dataset_name:
        raise ValueError(f"{folder} was trained on different datasets: {plans.get('dataset_name')} "
                         f"(its plans.json), not {dataset_name}")
    if dataset_json.get("labels") != raw_json.get("labels"):
        raise ValueError(f"{folder} was trained with labels {dataset_json.get('labels')}, the raw dataset has "
                         f"{raw_json.get('labels')}")
    if configuration not in plans.get("configurations", {}):
        raise ValueError(f"{folder / 'plans.json'} has no configuration {configuration!r}")


def _load_models(entries, raw_json: dict, configuration: str) -> None:
    """``ModelFolder`` per trained entry; the same dataset, label set, channels and file type for all, and
    the raw dataset's label set; display names unique."""
    from nnunet_equivariant.evaluation.rotation_eval import ModelFolder, check_same_task, make_names_unique

    trained = [e for e in entries if e.folds]
    for e in trained:
        e.model = ModelFolder.load(e.folder, e.folds, CHECKPOINT)
        _check_model_folder(e.folder, e.model.plans["dataset_name"], raw_json, configuration)
    check_same_task([e.model for e in trained])
    make_names_unique([e.model for e in trained])
    for e in entries:
        e.name = e.model.name if e.model is not None else f"{e.trainer}__{e.plans}"


def _read_folds(e: TrainerEntry, configuration: str, dataset_name: str) -> None:
    """Per fold: check what the checkpoint was trained on, read epoch times and nnU-Net's validation summary."""
    import torch

    from nnunet_equivariant.evaluation.cost import training_times
    from nnunet_equivariant.evaluation.rotation_eval import label_key_names

    for fold in e.folds:
        fold_folder = e.folder / f"fold_{fold}"
        checkpoint = torch.load(fold_folder / CHECKPOINT, map_location="cpu", weights_only=False)
        init_args = checkpoint.get("init_args", {})
        trained_config = init_args.get("configuration")
        if trained_config is not None and trained_config != configuration:
            raise ValueError(f"{fold_folder / CHECKPOINT} was trained with configuration {trained_config!r}, "
                             f"not {configuration!r}")
        trained_dataset = (init_args.get("plans") or {}).get("dataset_name")
        if trained_dataset is not None and trained_dataset != dataset_name:
            raise ValueError(f"{fold_folder / CHECKPOINT} was trained on {trained_dataset}, not {dataset_name}")
        times = training_times(fold_folder, checkpoint)
        del checkpoint
        if times is None:
            e.notes.append(f"fold {fold}: no epoch times in {CHECKPOINT} or training_log_*.txt")
        else:
            e.times[fold] = times
        summary = fold_folder / "validation" / "summary.json"
        if not summary.is_file():
            e.notes.append(f"fold {fold}: no {summary.relative_to(e.folder)} (nnU-Net's final validation did not "
                           f"run; `nnUNetv2_train ... {fold} --val` runs it)")
            continue
        result = json.loads(summary.read_text())
        names = label_key_names(e.model.dataset_json)
        for label, metrics in result["mean"].items():
            e.accuracy.append({"model": e.name, "fold": fold, "label": label,
                               "label_name": names.get(label, label), "dice": float(metrics["Dice"])})
        e.accuracy.append({"model": e.name, "fold": fold, "label": "foreground", "label_name": "foreground mean",
                           "dice": float(result["foreground_mean"]["Dice"])})


def _rotation(trained, cases, planes, angles, device) -> list[dict]:
    """rotation_eval's evaluation with each trainer's folds and a clock on every prediction."""
    import gc

    import torch

    from nnunet_equivariant.evaluation.rotation_eval import case_readers, evaluate_rotations, load_predictor

    models = [e.model for e in trained]
    readers = case_readers(models[0], cases)  # not 3D or no geometry: fail before loading a model
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    predictors = []
    for e in trained:
        predictor = load_predictor(e.model, e.folds, CHECKPOINT, str(device))  # nnUNetv2_predict's settings
        axes = predictor.allowed_mirroring_axes
        e.tta_passes = 2 ** len(axes) if predictor.use_mirroring and axes else 1
        predictors.append(_TimedPredictor(predictor, sync))
    rows = evaluate_rotations(cases, models, predictors, readers, planes, angles)
    for e, p in zip(trained, predictors):
        e.predict_seconds = p.seconds
    del predictors
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def _measure_cost(entries, trainer_classes, preprocessed, configuration, device, repeats) -> None:
    """Train-step time of every trainer, then peak memory of every trainer (memory last: see cost.py)."""
    from nnunet_equivariant.evaluation.cost import measure_train_step

    def inputs(e):  # what the trainer was trained with, else what it would train with
        if e.model is not None:
            return e.model.plans, e.model.dataset_json
        return (_check_preprocessed_plans(preprocessed, e.plans, configuration),
                json.loads((preprocessed / "dataset.json").read_text()))

    for measure in ("time", "memory"):
        for e in entries:
            print(f"[compare] train-step {measure} of {e.name}", flush=True)
            try:
                plans, dataset_json = inputs(e)
                measured = measure_train_step(trainer_classes[e.trainer], plans, configuration, dataset_json, device,
                                              measure=measure, repeats=repeats)
            except Exception as exc:  # e.g. out of memory: report it, measure the others
                e.notes.append(f"train-step {measure} not measured: {type(exc).__name__}: {exc}")
                continue
            if measure == "memory" and np.isnan(measured.peak_memory_mib):
                e.notes.append("train-step peak memory not measurable here (the CPU measurement needs Linux's "
                               "/proc/self/clear_refs and glibc)")
            if e.cost is None:
                e.cost = measured
            elif measure == "memory":
                e.cost.peak_memory_mib = measured.peak_memory_mib
