"""Shared fixtures: one synthetic nnU-Net workspace per test session, tiny models trained once.

End-to-end tests run nnU-Net's real console commands in subprocesses with only nnU-Net's usual variables
set (plus thread/worker limits for the 2-core CI machine). Our trainers are found through the start-up
hook installed with the package; the test-only short-schedule trainers in ``tests/trainers`` are added
to ``nnUNet_extTrainer`` the way a user would add their own folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
DATASET_ID = 901
DATASET_NAME = f"Dataset{DATASET_ID:03d}_RodsDiscs"


def console_script(name: str) -> str:
    """Path of an installed console script, preferring the running interpreter's environment."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script {name!r} is not installed")
    return found


class NnUNetWorkspace:
    """nnU-Net raw/preprocessed/results folders and the environment to run its commands in."""

    def __init__(self, root: Path):
        self.root = root
        self.raw = root / "nnUNet_raw"
        self.preprocessed = root / "nnUNet_preprocessed"
        self.results = root / "nnUNet_results"
        for p in (self.raw, self.preprocessed, self.results):
            p.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            nnUNet_raw=str(self.raw),
            nnUNet_preprocessed=str(self.preprocessed),
            nnUNet_results=str(self.results),
            nnUNet_def_n_proc="1",
            nnUNet_n_proc_DA="1",  # nnU-Net's planner sets torch threads to this: not 0
            nnUNet_compile="false",
            OMP_NUM_THREADS="2",
            MKL_NUM_THREADS="2",
            PYTHONUNBUFFERED="1",
        )
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
        ext = [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
        env["nnUNet_extTrainer"] = os.pathsep.join([str(TESTS / "trainers"), *ext])
        self.env = env

    def run(self, *args: str, timeout: float = 1200, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run a console command (``nnUNetv2_train ...``); fail the test with its output if it fails.

        ``env`` overrides variables for this command only."""
        cmd = [console_script(args[0]), *map(str, args[1:])]
        proc = subprocess.run(cmd, env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited with {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}"
                f"\n--- stderr ---\n{proc.stderr[-6000:]}"
            )
        return proc

    def predict(self, trainer: str, output: Path, *extra: str) -> subprocess.CompletedProcess:
        """``nnUNetv2_predict`` of fold 0 of ``trainer`` (default plans, 3d_fullres) on the test images,
        in this process's way: CPU, no worker processes. ``extra``: more arguments (``--save_probabilities``)."""
        return self.run("nnUNetv2_predict", "-i", self.dataset_raw / "imagesTs", "-o", output, "-d", DATASET_ID,
                        "-c", "3d_fullres", "-tr", trainer, "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0",
                        *extra)

    def evaluate(self, predictions: Path, model: Path) -> dict:
        """``nnUNetv2_evaluate_folder`` of ``predictions`` against labelsTs; returns its summary.json."""
        self.run("nnUNetv2_evaluate_folder", self.dataset_raw / "labelsTs", predictions,
                 "-djfile", model / "dataset.json", "-pfile", model / "plans.json")
        return json.loads((predictions / "summary.json").read_text())

    @property
    def dataset_raw(self) -> Path:
        return self.raw / DATASET_NAME

    def model_folder(self, trainer: str, plans: str = "nnUNetPlans", configuration: str = "3d_fullres") -> Path:
        return self.results / DATASET_NAME / f"{trainer}__{plans}__{configuration}"


def assert_dice_recomputed(metrics: dict, labels=("1", "2")) -> None:
    """nnU-Net's per-case counts and Dice in ``metrics`` (a ``summary.json``) equal those recomputed with numpy
    from the files it names, and the model predicts every label somewhere (so the Dice are not all NaN/0)."""
    import numpy as np
    import SimpleITK as sitk

    predicted = dict.fromkeys(labels, 0)
    for case in metrics["metric_per_case"]:
        seg, ref = (sitk.GetArrayFromImage(sitk.ReadImage(case[f])) for f in ("prediction_file", "reference_file"))
        for label in labels:
            s, r = seg == int(label), ref == int(label)
            tp, fp, fn = int((s & r).sum()), int((s & ~r).sum()), int((~s & r).sum())
            ours = case["metrics"][label]
            assert (ours["TP"], ours["FP"], ours["FN"]) == (tp, fp, fn), f"{case['prediction_file']} label {label}"
            expected = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
            assert ours["Dice"] == expected or (np.isnan(expected) and np.isnan(ours["Dice"])), \
                f"Dice of label {label} recomputed from {case['prediction_file']}"
            predicted[label] += int(s.sum())
    assert all(predicted.values()), f"the model predicts every label somewhere (voxels per label: {predicted})"


@pytest.fixture(scope="session")
def nnunet_workspace(tmp_path_factory) -> NnUNetWorkspace:
    """Synthetic rods-and-discs dataset (8 training cases of 32^3, 2 test cases, labels 1 and 2),
    planned and preprocessed for 3d_fullres with nnU-Net's default planner."""
    from nnunet_equivariant.synthetic import write_rods_and_discs_dataset

    ws = NnUNetWorkspace(tmp_path_factory.mktemp("nnunet"))
    write_rods_and_discs_dataset(ws.raw, DATASET_ID, num_train=8, num_test=2, shape=(32, 32, 32), seed=0)
    ws.run("nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "3d_fullres", "-np", "1",
           "--verify_dataset_integrity")
    return ws


@pytest.fixture(scope="session")
def trained_model(nnunet_workspace):
    """Factory: ``trained_model("nnUNetTrainer_tiny")`` trains fold 0 (or ``fold=``) once per session, returns
    the model folder. ``--npz`` keeps the validation probabilities, which ``nnUNetv2_find_best_configuration``
    ensembles (tests/test_e2e_folds.py)."""
    cache: dict[tuple[str, str, int], Path] = {}

    def train(trainer: str, plans: str = "nnUNetPlans", fold: int = 0) -> Path:
        key = (trainer, plans, fold)
        if key not in cache:
            # nnUNet_n_proc_DA=0: augmentation in the training process, which the seeded test trainers need
            nnunet_workspace.run("nnUNetv2_train", DATASET_ID, "3d_fullres", fold, "-tr", trainer,
                                 "-p", plans, "-device", "cpu", "--npz", env={"nnUNet_n_proc_DA": "0"})
            cache[key] = nnunet_workspace.model_folder(trainer, plans)
        return cache[key]

    return train


@pytest.fixture
def trainer_env(nnunet_workspace, monkeypatch):
    """The workspace, with ``nnUNet_extTrainer`` set in this process as for the console commands, so an
    in-process ``nnUNetPredictor`` finds the test-only trainers too."""
    monkeypatch.setenv("nnUNet_extTrainer", nnunet_workspace.env["nnUNet_extTrainer"])
    return nnunet_workspace


@pytest.fixture
def float64_default():
    """Default dtype float64 (and a fixed seed) while the test runs: modules built inside compute their
    buffers in float64 too, so equivariance can be checked to float64 precision."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(previous)
