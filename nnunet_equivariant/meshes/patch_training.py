"""The paper's Table III study: patch classifiers trained over the nine train:test splits and seeds.

For each architecture, symmetry and task (``build_patch_classifier``), split ratio and seed stored in a patch
set (``write_patch_dataset``): train on the patches of the training meshes (one-hot targets,
``BCEWithLogitsLoss`` on the classifier's logits, since its output is a per-class sigmoid; Adam), then
classify every vertex of the test meshes (most probable class) and score them per mesh
(``nnunet_equivariant.meshes.metrics``). The baseline (``symmetry=None``) is the same network for
both tasks and is trained once per split and seed.

Outputs: ``results.csv`` (one row per run), ``table.csv`` (Table III layout: one row per ratio, task and
architecture; mean accuracy in % over seeds per symmetry) and ``accuracy.png`` (Fig. 3 layout: accuracy
against train fraction, one panel per task and architecture, one line per symmetry).
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nnunet_equivariant.io import atomic_folder
from nnunet_equivariant.meshes.backprojection import classify_vertices, write_mesh_predictions
from nnunet_equivariant.meshes.metrics import summarize, vertex_metrics
from nnunet_equivariant.meshes.patch_dataset import PatchDataset, read_patch_meta, split_cases
from nnunet_equivariant.symmetry import MIRROR_SYMMETRIES

__all__ = ["ARCHS", "SYMMETRIES", "TASKS", "PatchTrainingConfig", "train_one", "train_patches"]

ARCHS = ("K16S16", "K4S4-K4S4", "K8S1-K8S1-K2S1")
SYMMETRIES = MIRROR_SYMMETRIES
TASKS = ("keep_architecture", "keep_parameters")


@dataclass(frozen=True)
class PatchTrainingConfig:
    """Optimisation settings of every run.

    ``samples_per_epoch``: patches drawn per epoch (all training vertices when ``None``).
    """

    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 1e-3
    samples_per_epoch: int | None = None
    device: str = "cpu"


def _symmetry_name(symmetry: str | None) -> str:
    return "baseline" if symmetry is None else symmetry


def train_one(folder: str | Path, arch: str, symmetry: str | None, task: str, ratio: str, seed: int,
              config: PatchTrainingConfig = PatchTrainingConfig(), cache: dict | None = None,
              mesh_output: Path | None = None) -> dict:
    """Train one classifier on one stored split and score it on the split's test meshes.

    ``cache``: loaded cases shared between runs (see ``PatchDataset``). ``mesh_output``: when given, each test
    mesh is written there with its predicted labels and scores (``CASE.ply``, ``CASE.vtu``).

    Returns a result row: settings, ``parameters``, ``accuracy`` (mean over test meshes of the per-vertex
    accuracy), ``mean_iou``, ``mean_dsc``, ``train_seconds``.
    """
    from nnunet_equivariant.networks import build_patch_classifier

    meta = read_patch_meta(folder)
    train_cases, test_cases = split_cases(meta, ratio, seed)
    num_classes = len(meta["class_names"])
    torch.manual_seed(seed)
    device = torch.device(config.device)
    model = build_patch_classifier(arch, symmetry, task, num_classes=num_classes).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    train = PatchDataset(folder, train_cases, cache)
    per_epoch = len(train) if config.samples_per_epoch is None else min(config.samples_per_epoch, len(train))
    start = time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(train))[:per_epoch]
        for i in range(0, per_epoch, config.batch_size):
            patches, labels = train.batch(order[i:i + config.batch_size])
            target = torch.nn.functional.one_hot(labels, num_classes).float()
            loss = loss_fn(model.logits(patches.to(device)), target.to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    train_seconds = time.perf_counter() - start
    test = PatchDataset(folder, test_cases, cache)
    per_mesh = []
    if mesh_output is not None:
        mesh_output.mkdir(parents=True, exist_ok=True)
    for mesh, grid in zip(test.meshes, test.grids):
        scores = classify_vertices(model, mesh, grid, test.side, test.n, batch_size=4 * config.batch_size,
                                   device=device)
        predicted = scores.argmax(axis=1)
        per_mesh.append(vertex_metrics(predicted, mesh.labels, num_classes))
        if mesh_output is not None:
            write_mesh_predictions(mesh_output, mesh, predicted, scores)
    summary = summarize(per_mesh, test.class_names)
    return {"arch": arch, "symmetry": _symmetry_name(symmetry), "task": task, "ratio": ratio, "seed": seed,
            "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "accuracy": summary["accuracy"], "mean_iou": summary["mean_iou"], "mean_dsc": summary["mean_dsc"],
            "train_seconds": round(train_seconds, 3)}


def train_patches(folder: str | Path, output: str | Path, *, archs: Sequence[str] = ARCHS,
                  symmetries: Sequence[str | None] = SYMMETRIES, tasks: Sequence[str] = TASKS,
                  ratios: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
                  config: PatchTrainingConfig = PatchTrainingConfig(), write_meshes: bool = False,
                  overwrite: bool = False) -> list[dict]:
    """Run ``train_one`` over every combination and write ``results.csv``, ``table.csv``, ``accuracy.png``.

    ``ratios`` / ``seeds`` default to all the splits stored in the patch set. ``write_meshes``: also write the
    labelled test meshes of every run to ``meshes/ARCH_SYMMETRY_TASK_RATIO_seedK/``.
    """
    from tqdm import tqdm

    for name, values, allowed in (("arch", archs, ARCHS), ("symmetry", symmetries, SYMMETRIES),
                                  ("task", tasks, TASKS)):
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            raise ValueError(f"unknown {name} {unknown or 'list (empty)'}; choose from "
                             f"{[_symmetry_name(a) if name == 'symmetry' else a for a in allowed]}")
    meta = read_patch_meta(folder)
    stored = [(s["ratio"], s["seed"]) for s in meta["splits"]]
    ratios = list(dict.fromkeys(r for r, _ in stored)) if ratios is None else list(ratios)
    seeds = sorted({s for _, s in stored}) if seeds is None else list(seeds)
    for ratio in ratios:
        for seed in seeds:
            split_cases(meta, ratio, seed)  # every requested split exists, before any training
    runs = []
    for arch in archs:
        for symmetry in symmetries:
            for task in ([tasks[0]] if symmetry is None else tasks):
                runs += [(arch, symmetry, task, ratio, seed) for ratio in ratios for seed in seeds]
    rows = []
    cache: dict = {}
    with atomic_folder(output, overwrite) as tmp:
        for arch, symmetry, task, ratio, seed in tqdm(runs, desc="patch classifiers", unit="run"):
            run = f"{arch}_{_symmetry_name(symmetry)}_{task}_{ratio.replace(':', '-')}_seed{seed}"
            row = train_one(folder, arch, symmetry, task, ratio, seed, config, cache,
                            tmp / "meshes" / run if write_meshes else None)
            if symmetry is None:  # the baseline serves both tasks
                rows += [{**row, "task": t} for t in tasks]
            else:
                rows.append(row)
        _write_csv(tmp / "results.csv", rows)
        _write_csv(tmp / "table.csv", table_iii(rows, ratios))
        plot_accuracy(rows, tmp / "accuracy.png")
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue())


def table_iii(rows: list[dict], ratios: Sequence[str]) -> list[dict]:
    """Table III layout: per ratio, task and architecture, mean accuracy (%) over seeds for each symmetry,
    with the difference to the baseline in parentheses."""
    table = []
    symmetries = [_symmetry_name(s) for s in SYMMETRIES if any(r["symmetry"] == _symmetry_name(s) for r in rows)]
    for ratio in ratios:
        for task in dict.fromkeys(r["task"] for r in rows):
            for arch in dict.fromkeys(r["arch"] for r in rows):
                cells = {}
                for sym in symmetries:
                    acc = [r["accuracy"] for r in rows if (r["ratio"], r["task"], r["arch"], r["symmetry"]) ==
                           (ratio, task, arch, sym)]
                    cells[sym] = 100 * float(np.mean(acc)) if acc else float("nan")
                base = cells.get("baseline", float("nan"))
                entry = {"ratio": ratio, "task": task, "model": arch}
                for sym, value in cells.items():
                    entry[sym] = f"{value:.2f}" if sym == "baseline" or np.isnan(base) else \
                        f"{value:.2f} ({value - base:+.2f})"
                table.append(entry)
    return table


def plot_accuracy(rows: list[dict], path: Path) -> None:
    """Accuracy against train fraction: one panel per (task, architecture), one line per symmetry.

    Drawn on an Agg canvas in matplotlib's default style, without touching pyplot's global state."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(4 * len(archs), 3.2 * len(tasks)), constrained_layout=True)
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(tasks), len(archs), squeeze=False, sharey=True)
        for i, task in enumerate(tasks):
            for j, arch in enumerate(archs):
                ax = axes[i, j]
                for sym in dict.fromkeys(r["symmetry"] for r in rows):
                    sel = [r for r in rows if (r["task"], r["arch"], r["symmetry"]) == (task, arch, sym)]
                    fractions = sorted({int(r["ratio"].split(":")[0]) for r in sel})
                    means = [100 * np.mean([r["accuracy"] for r in sel if int(r["ratio"].split(":")[0]) == f])
                             for f in fractions]
                    ax.plot(fractions, means, marker="o", label=sym, linewidth=2 if sym == "baseline" else 1)
                ax.set_title(f"{arch}, {task.replace('_', ' ')}", fontsize=9)
                ax.set_xlabel("train share (%)")
                if j == 0:
                    ax.set_ylabel("vertex accuracy (%)")
        axes[0, -1].legend(fontsize=7)
        fig.savefig(path, dpi=120)
