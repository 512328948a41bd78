"""Reports of ``nnunet-equivariant compare``: one row per trainer, ``report.md``, CSVs and PNG plots.

``comparison.csv`` columns (one row per trainer; NaN where a number could not be measured):

- ``model, trainer, network, plans, configuration, folds, failed_folds`` (``network``: the trainer's
  ``E3nnSpec`` fields that differ from the default recipe, its mirror symmetry, or "the plans' network")
- ``cv_dice_<label>``, ``cv_dice_<label>_std``: nnU-Net's ``validation/summary.json`` Dice (``mean`` per
  label, ``foreground_mean`` as label ``foreground``), mean and sample standard deviation over the folds
  (std NaN for one fold); ``cv_folds``: folds with a summary
- ``test_dice_<plane>_<angle>``: mean foreground Dice over the test cases at that rotation (rotation_eval);
  ``test_dice_0deg``, ``test_dice_min``, ``worst_drop`` (0 deg minus the lowest, over planes and angles)
  and ``worst_drop_at`` (``plane angle``)
- ``parameters, patch_size, batch_size, train_step_s, peak_memory_mib, memory_kind``: the train step
  measured in this run (:mod:`~nnunet_equivariant.evaluation.cost`)
- ``epochs, epoch_s, train_hours_per_fold, train_hours_total``: from the training logs, total epochs,
  median epoch time (mean over folds), training time per fold (mean) and summed over the folds (the
  cross-validation's compute time)
- ``ema_pseudo_dice_final``: nnU-Net's EMA pseudo Dice (the validation curve it logs) at the end of
  training, mean over folds; ``equal_time_s``: the training seconds every trained fold of every trainer
  reached (the shortest training); ``ema_pseudo_dice_at_equal_time``: each trainer's EMA pseudo Dice at the
  last epoch that ended by then (mean over the folds that had one; NaN if none had): accuracy per second of
  training, not per epoch
- ``predict_s_per_case`` (median over ``predictions``), ``tta_passes`` (network evaluations per window)
- ``<quantity>_ratio``: against the first trainer listed.
"""
from __future__ import annotations

import csv
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_equivariant.evaluation.rotation_report import mean_dice, write_csv, write_plot, write_summary

__all__ = ["ReportContext", "comparison_rows", "write_all", "write_learning_curves", "RATIO_COLUMNS"]

# (column, what, better) for the ratios and the verdict
RATIO_COLUMNS = (("parameters", "parameters", "lower"), ("train_step_s", "train step (s)", "lower"),
                 ("peak_memory_mib", "train-step peak memory (MiB)", "lower"), ("epoch_s", "epoch time (s)", "lower"),
                 ("train_hours_per_fold", "training time per fold (h)", "lower"),
                 ("predict_s_per_case", "predict time per case (s)", "lower"))
_NAN = float("nan")


@dataclass
class ReportContext:
    dataset: str
    configuration: str
    folds: list
    planes: list
    angles: list
    num_cases: int
    device: str
    cost_repeats: int
    command_line: str


def _mean_std(values):
    values = [v for v in values if not np.isnan(v)]
    if not values:
        return _NAN, _NAN
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else _NAN


def _labels(entries) -> list[str]:
    return list(dict.fromkeys(r["label"] for e in entries for r in e.accuracy))


def _curves(entries) -> list[tuple[str, object, object]]:
    """``(model, fold, TrainingTimes)`` of every fold with a learning curve."""
    return [(e.name, fold, t) for e in entries for fold, t in e.times.items() if t.curve_seconds]


def equal_training_time(entries) -> float:
    """The training seconds every fold with a learning curve reached (NaN if none has one)."""
    ends = [t.curve_seconds[-1] for _, _, t in _curves(entries)]
    return float(min(ends)) if ends else _NAN


def dice_at(times, seconds: float) -> float:
    """EMA pseudo Dice of the last epoch that ended by ``seconds`` of training (NaN if none had)."""
    done = [d for t, d in zip(times.curve_seconds, times.ema_pseudo_dice) if t <= seconds + 1e-9]
    return float(done[-1]) if done else _NAN


def comparison_rows(entries, rotation_rows: Sequence[dict], context: ReportContext) -> list[dict]:
    """One dict per trainer with every column of ``comparison.csv`` (see the module docstring)."""
    means = mean_dice(rotation_rows)
    labels = _labels(entries)
    equal = equal_training_time(entries)
    rows = []
    for e in entries:
        row = {"model": e.name, "trainer": e.trainer, "network": e.network, "plans": e.plans,
               "configuration": context.configuration,
               "folds": " ".join(map(str, e.folds)), "failed_folds": " ".join(map(str, e.failures))}
        row["cv_folds"] = " ".join(map(str, dict.fromkeys(r["fold"] for r in e.accuracy)))
        for label in labels:
            mean, std = _mean_std([r["dice"] for r in e.accuracy if r["label"] == label])
            row[f"cv_dice_{label}"], row[f"cv_dice_{label}_std"] = mean, std
        curve = {(p, a): means.get((e.name, p, a, "foreground"), _NAN) for p in context.planes for a in context.angles}
        for (plane, angle), value in curve.items():
            row[f"test_dice_{plane}_{angle:g}"] = value
        zero = curve[(context.planes[0], 0.0)]
        valid = {k: v for k, v in curve.items() if not np.isnan(v)}
        worst = min(valid, key=valid.get) if valid else None
        row["test_dice_0deg"] = zero
        row["test_dice_min"] = valid[worst] if worst else _NAN
        row["worst_drop"] = zero - valid[worst] if worst else _NAN
        row["worst_drop_at"] = f"{worst[0]} {worst[1]:g}" if worst else ""
        cost = e.cost
        row["parameters"] = cost.parameters if cost else _NAN
        row["patch_size"] = "x".join(map(str, cost.patch_size)) if cost else ""
        row["batch_size"] = cost.batch_size if cost else _NAN
        row["train_step_s"] = cost.step_seconds if cost else _NAN
        row["peak_memory_mib"] = cost.peak_memory_mib if cost else _NAN
        row["memory_kind"] = "CUDA peak allocated" if context.device.startswith("cuda") else "CPU resident peak"
        times = list(e.times.values())
        row["epochs"] = sum(t.epochs for t in times) if times else _NAN
        row["epoch_s"] = float(np.mean([t.median_epoch_seconds for t in times])) if times else _NAN
        row["train_hours_per_fold"] = float(np.mean([t.total_seconds for t in times])) / 3600 if times else _NAN
        row["train_hours_total"] = sum(t.total_seconds for t in times) / 3600 if times else _NAN
        curves = [t for t in times if t.curve_seconds]
        row["ema_pseudo_dice_final"] = _mean_std([t.ema_pseudo_dice[-1] for t in curves])[0]
        row["equal_time_s"] = equal
        row["ema_pseudo_dice_at_equal_time"] = _mean_std([dice_at(t, equal) for t in curves])[0]
        row["predict_s_per_case"] = float(np.median(e.predict_seconds)) if e.predict_seconds else _NAN
        row["predictions"] = len(e.predict_seconds)
        row["tta_passes"] = e.tta_passes if e.tta_passes is not None else _NAN
        rows.append(row)
    for column, _, _ in RATIO_COLUMNS:
        reference = rows[0][column]
        for row in rows:
            row[f"{column}_ratio"] = row[column] / reference if reference and not np.isnan(reference) else _NAN
    return rows


def _fmt(value, digits=3) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return f"{value:.{digits}f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"


def _pm(mean, std) -> str:
    return _fmt(mean, 4) + ("" if np.isnan(std) else f" ± {std:.4f}")


def _ratio(value) -> str:
    return "" if np.isnan(value) else f" ({value:.2f}x)"


def _verdict(rows) -> list[str]:
    """One line per quantity: the trainer with the best value (``higher`` or ``lower`` is better), then the
    others. Trainers without a value (NaN) are left out; a quantity nobody measured gets no line. Values equal
    as shown (4 decimals for Dice, the report's digits otherwise) are a tie, and every tied trainer is named."""
    quantities = [("cv_dice_foreground", "cross-validation foreground Dice", "higher"),
                  ("test_dice_0deg", "test foreground Dice at 0 deg", "higher"),
                  ("test_dice_min", "lowest test foreground Dice over the rotations", "higher"),
                  ("worst_drop", "worst Dice drop under rotation", "lower"),
                  ("ema_pseudo_dice_at_equal_time", "nnU-Net's EMA pseudo Dice after the same training seconds",
                   "higher"), *RATIO_COLUMNS]
    lines = []
    for column, what, better in quantities:
        values = [(r["model"], r.get(column, _NAN)) for r in rows]
        values = [(m, v) for m, v in values if not np.isnan(v)]
        if not values:
            continue
        best = (max if better == "higher" else min)(v for _, v in values)
        show = ((lambda v: f"{v:.4f}") if "dice" in column or "drop" in column
                else (lambda v: f"{int(v):,}") if column == "parameters" else (lambda v: f"{v:.4g}"))
        winners = [m for m, v in values if show(v) == show(best)]
        others = ", ".join(f"{m} {show(v)}" for m, v in values if m not in winners)
        named = " and ".join(f"**{m}**" for m in winners) + (" (tie)" if len(winners) > 1 else "")
        lines.append(f"- **{what}** ({better} is better): {named} {show(best)}" + (f"; {others}" if others else ""))
    return lines


def _machine(device: str) -> list[str]:
    from importlib.metadata import version

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return [f"- machine: {platform.node()} ({platform.machine()}, {platform.processor() or 'cpu'}), "
            f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads; GPU: {gpu}; "
            f"measured on: {device}; load average at the end {_load_average()} (other jobs inflate the times)",
            f"- versions: python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"cuDNN {cudnn}, nnunetv2 {version('nnunetv2')}, e3nn {version('e3nn')}"]


def _load_average() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg()) + " (1 / 5 / 15 min)"
    except (AttributeError, OSError):
        return "n/a"


def _report(entries, rows, context: ReportContext) -> str:
    labels = _labels(entries)
    names = {r["label"]: r["label_name"] for e in entries for r in e.accuracy}
    lines = [f"# Comparison of {len(rows)} trainers on {context.dataset} ({context.configuration})", "",
             f"- command: `{context.command_line}`",
             f"- written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; folds {', '.join(map(str, context.folds))}",
             *_machine(context.device), "", "## Verdict: which trainer wins on what", "", *_verdict(rows)]
    lines += ["", "## The networks compared", "", "| model | trainer | plans | network |", "|---|---|---|---|",
              *(f"| {r['model']} | {r['trainer']} | {r['plans']} | {r['network']} |" for r in rows)]
    ratio_reference = rows[0]["model"]
    lines += ["", "## Accuracy: nnU-Net's cross-validation", "",
              "Dice of each fold's `validation/summary.json` (nnU-Net's final validation on the fold's held-out "
              "cases), mean ± sample std over the folds (`dice_per_fold.png`, `accuracy_per_fold.csv`).", "",
              "| model | folds | " + " | ".join(f"{names.get(l, l)} ({l})" if l != "foreground" else "foreground mean"
                                              for l in labels) + " |",
              "|---" * (len(labels) + 2) + "|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['cv_folds'] or 'none'} | "
                     + " | ".join(_pm(row[f"cv_dice_{l}"], row[f"cv_dice_{l}_std"]) for l in labels) + " |")
    lines += ["", f"## Pose robustness on the {context.num_cases} test case(s)", "",
              "Mean foreground Dice over imagesTs/labelsTs, each case rotated about its centre in physical space "
              "and predicted by the fold ensemble with `nnUNetv2_predict`'s settings (rotation_eval; Dice inside "
              "the original field of view). `drop`: 0 deg minus the lowest value (`dice_vs_angle.png`, "
              "`rotation_eval.csv`; per label: `rotation_summary.md`).", ""]
    for plane in context.planes:
        lines += [f"| {plane} | " + " | ".join(f"{a:g}°" for a in context.angles) + " | drop |",
                  "|---" * (len(context.angles) + 2) + "|"]
        for row in rows:
            values = [row[f"test_dice_{plane}_{a:g}"] for a in context.angles]
            valid = [v for v in values if not np.isnan(v)]
            drop = values[context.angles.index(0.0)] - min(valid) if valid else _NAN
            lines.append(f"| {row['model']} | " + " | ".join(_fmt(v) for v in values) + f" | {_fmt(drop)} |")
        lines.append("")
    if any(not np.isnan(r["ema_pseudo_dice_at_equal_time"]) for r in rows):
        lines += ["## Learning per second of training", "",
                  "nnU-Net's EMA pseudo Dice (the validation curve of its training log) against the seconds of "
                  "training (epoch times summed; `dice_vs_training_seconds.png`, `learning_curves.csv`), mean over "
                  f"folds, at {_fmt(rows[0]['equal_time_s'], 0)} s (the shortest training of any fold, so every "
                  "trainer had it) and at each trainer's end. A slower trainer has had fewer iterations by then.", "",
                  "| model | EMA pseudo Dice at the same seconds | at the end | training per fold (h) |",
                  "|---|---|---|---|"]
        lines += [f"| {r['model']} | {_fmt(r['ema_pseudo_dice_at_equal_time'])} | {_fmt(r['ema_pseudo_dice_final'])} | "
                  f"{_fmt(r['train_hours_per_fold'], 4)} |" for r in rows]
        lines.append("")
    lines += ["## Cost", "",
              f"Ratios in parentheses against {ratio_reference}. Train step: the trainer's own `train_step` (loss, "
              f"optimizer{', AMP' if context.device.startswith('cuda') else ''}) on a random batch at the plans' "
              f"patch and batch size, median of {context.cost_repeats} after a warm-up, trainers one after another "
              f"in this process. Peak memory: {rows[0]['memory_kind']} of one step, counted from before the network "
              "was built (weights, gradients, optimizer state, activations). Epoch time: median over the epochs "
              "in nnU-Net's training log (mean over folds; measured where and when the model was trained); "
              "training time: summed over the epochs of a fold, mean over folds (`train_hours_total` in "
              "`comparison.csv`: summed over folds). Predict: median wall time of one test case "
              "(sliding window, the trainer's own test-time mirroring: `TTA passes` network evaluations per window), "
              "over every rotation predicted above.", "",
              "| model | parameters | patch x batch | train step (s) | peak memory (MiB) | epoch (s) | "
              "training per fold (h) | predict (s/case) | TTA passes |", "|---" * 9 + "|"]
    for row in rows:
        lines.append(
            f"| {row['model']} | {_fmt(row['parameters'])}{_ratio(row['parameters_ratio'])} | "
            f"{row['patch_size'] or 'n/a'} x {_fmt(row['batch_size'])} | "
            f"{_fmt(row['train_step_s'])}{_ratio(row['train_step_s_ratio'])} | "
            f"{_fmt(row['peak_memory_mib'], 0)}{_ratio(row['peak_memory_mib_ratio'])} | "
            f"{_fmt(row['epoch_s'], 2)}{_ratio(row['epoch_s_ratio'])} | "
            f"{_fmt(row['train_hours_per_fold'], 4)}{_ratio(row['train_hours_per_fold_ratio'])} | "
            f"{_fmt(row['predict_s_per_case'])}{_ratio(row['predict_s_per_case_ratio'])} | {_fmt(row['tta_passes'])} |")
    problems = [f"- {e.name} fold {f} failed to train: {why}" for e in entries for f, why in e.failures.items()]
    problems += [f"- {e.name}: {note}" for e in entries for note in e.notes]
    if problems:
        lines += ["", "## Failures and gaps", "", *problems]
    lines += ["", "## Models", "", *[f"- `{e.name}`: `{e.folder}` (folds {', '.join(map(str, e.folds)) or 'none'})"
                                     for e in entries],
              "", "Files: `comparison.csv` (every number above, one row per trainer), `accuracy_per_fold.csv`, "
              "`rotation_eval.csv`, `rotation_summary.md`, `dice_vs_angle.png`, `dice_per_fold.png`, `cost.png`, "
              "`learning_curves.csv`, `dice_vs_training_seconds.png`.", ""]
    return "\n".join(lines)


def _write_table(rows: Sequence[dict], path: Path) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), constrained_layout=True)
    FigureCanvasAgg(fig)
    return fig


def _plot_folds(entries, path: Path) -> None:
    """Per label: each trainer's mean Dice over folds (bar, sample std) and each fold (dots)."""
    import matplotlib.style

    labels = _labels(entries) or ["foreground"]
    names = {r["label"]: r["label_name"] for e in entries for r in e.accuracy}
    with matplotlib.style.context("default"):
        fig = _figure(max(4.0, 1.2 * len(labels) * len(entries)), 3.4)
        ax = fig.subplots()
        width = 0.8 / len(entries)
        for i, e in enumerate(entries):
            xs = np.arange(len(labels)) + (i - (len(entries) - 1) / 2) * width
            stats = [_mean_std([r["dice"] for r in e.accuracy if r["label"] == l]) for l in labels]
            ax.bar(xs, [m for m, _ in stats], width * 0.9, yerr=[0 if np.isnan(s) else s for _, s in stats],
                   capsize=3, label=e.name, alpha=0.7)
            for x, label in zip(xs, labels):
                folds = [r["dice"] for r in e.accuracy if r["label"] == label]
                ax.plot([x] * len(folds), folds, "k.", markersize=4)
        ax.set_xticks(np.arange(len(labels)), [names.get(l, l) for l in labels])
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("cross-validation Dice")
        ax.set_title("nnU-Net validation Dice per fold (dots) and mean ± std (bars)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
        fig.savefig(path, dpi=120)


def _plot_cost(rows, path: Path) -> None:
    """One panel per cost quantity: a bar per trainer, labelled with its ratio to the first trainer."""
    import matplotlib.style

    panels = [(c, what) for c, what, _ in RATIO_COLUMNS if any(not np.isnan(r[c]) for r in rows)]
    models = [r["model"] for r in rows]
    with matplotlib.style.context("default"):
        columns = min(3, max(1, len(panels)))
        grid_rows = -(-max(1, len(panels)) // columns)
        fig = _figure(3.6 * columns, grid_rows * (0.4 * len(models) + 1.4) + 0.4)
        axes = fig.subplots(grid_rows, columns, squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        for i, (ax, (column, what)) in enumerate(zip(axes.flat, panels)):
            values = [r[column] for r in rows]
            ax.barh(range(len(models)), [0 if np.isnan(v) else v for v in values],
                    color=[f"C{i}" for i in range(len(models))])
            for y, (v, row) in enumerate(zip(values, rows)):
                ax.text(0, y, " n/a" if np.isnan(v) else f" {row[column + '_ratio']:.2f}x", va="center", fontsize=8)
            ax.set_yticks(range(len(models)), models if i % columns == 0 else [""] * len(models), fontsize=8)
            ax.invert_yaxis()
            ax.set_title(what, fontsize=9)
            ax.grid(axis="x", alpha=0.3)
        fig.suptitle(f"cost, ratios against {models[0]}", fontsize=10)
        fig.savefig(path, dpi=120)


def _plot_learning(entries, path: Path) -> None:
    """EMA pseudo Dice against training seconds: a colour per model, a line per fold, the equal time dashed."""
    import matplotlib
    import matplotlib.style

    with matplotlib.style.context("default"):
        fig = _figure(9.0, 3.8)
        ax = fig.subplots()
        # tab10's colours repeat after 10 models (a benchmark compares 2 seeds of 6 trainers): tab20 then
        palette = matplotlib.colormaps["tab10" if len(entries) <= 10 else "tab20"]
        colours = {e.name: palette(i % palette.N) for i, e in enumerate(entries)}
        labelled = set()
        for model, fold, t in _curves(entries):
            ax.plot(t.curve_seconds, t.ema_pseudo_dice, "-", color=colours[model], linewidth=1.5,
                    label=None if model in labelled else model)
            labelled.add(model)
        equal = equal_training_time(entries)
        if not np.isnan(equal):
            ax.axvline(equal, color="k", linestyle="--", linewidth=0.8)
        ax.set_xlabel("training seconds (epoch times summed)")
        ax.set_ylabel("EMA pseudo Dice (nnU-Net's validation curve)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title("learning per second of training; a line per fold", fontsize=10)
        if labelled:  # beside the axes: the curves fill the lower right
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.savefig(path, dpi=120)


def write_learning_curves(entries, folder: Path) -> None:
    """``learning_curves.csv`` (model, fold, epoch, training_s, pseudo_dice, ema_pseudo_dice) and
    ``dice_vs_training_seconds.png`` of ``entries`` (each with ``name`` and ``times``: fold ->
    ``cost.TrainingTimes``) into ``folder``."""
    with open(Path(folder) / "learning_curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("model", "fold", "epoch", "training_s", "pseudo_dice", "ema_pseudo_dice"))
        for model, fold, t in _curves(entries):
            writer.writerows((model, fold, i, s, d, ema) for i, (s, d, ema) in
                             enumerate(zip(t.curve_seconds, t.pseudo_dice, t.ema_pseudo_dice)))
    _plot_learning(entries, Path(folder) / "dice_vs_training_seconds.png")


def write_all(folder: Path, entries, rows, rotation_rows, context: ReportContext) -> None:
    """Every file of the comparison into ``folder``."""
    folder = Path(folder)
    _write_table(rows, folder / "comparison.csv")
    accuracy = [r for e in entries for r in e.accuracy]
    with open(folder / "accuracy_per_fold.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("model", "fold", "label", "label_name", "dice"))
        writer.writeheader()
        writer.writerows(accuracy)
    write_csv(rotation_rows, folder / "rotation_eval.csv")
    write_plot(rotation_rows, folder / "dice_vs_angle.png")
    evaluated = [e for e in entries if e.model is not None]
    write_summary(rotation_rows, folder / "rotation_summary.md", models=[(e.name, str(e.folder)) for e in evaluated],
                  folds=context.folds, num_cases=context.num_cases, files=("rotation_eval.csv", "dice_vs_angle.png"))
    _plot_folds(entries, folder / "dice_per_fold.png")
    _plot_cost(rows, folder / "cost.png")
    write_learning_curves(entries, folder)
    (folder / "report.md").write_text(_report(entries, rows, context))
