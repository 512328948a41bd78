"""Reports of ``rotation_eval``: per-case CSV, Dice-vs-angle plot, markdown summary.

Rows are dicts with ``model, plane, angle_deg, case, label, label_name, dice, tp, fp, fn, fov_voxels``.
Means over cases ignore NaN (a label absent from both reference and prediction), as nnU-Net's
``compute_metrics_on_folder`` does; the foreground mean is the mean of the per-label means.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["COLUMNS", "write_csv", "mean_dice", "write_plot", "write_summary"]

COLUMNS = ("model", "plane", "angle_deg", "case", "label", "label_name", "dice", "tp", "fp", "fn", "fov_voxels")


def write_csv(rows: Sequence[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def mean_dice(rows: Sequence[dict]) -> dict[tuple[str, str, float, str], float]:
    """``{(model, plane, angle, label): mean Dice over cases}``, plus label ``"foreground"``."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["plane"], r["angle_deg"], r["label"])].append(r["dice"])
    means = {k: _nanmean(v) for k, v in groups.items()}
    foreground = defaultdict(list)
    for (model, plane, angle, _), value in means.items():
        foreground[(model, plane, angle, "foreground")].append(value)
    means.update({k: float(np.mean(v)) for k, v in foreground.items()})
    return means


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


def _ordered(rows, key):
    return list(dict.fromkeys(r[key] for r in rows))


def write_plot(rows: Sequence[dict], path: Path) -> None:
    """Mean Dice against angle: one panel per plane (rows) and label (columns), one line per model.

    Drawn in matplotlib's default style whatever the process set before (nnU-Net's training logger
    calls ``seaborn.set(font_scale=2.5)``), on an Agg canvas without touching pyplot's state."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    means = mean_dice(rows)
    models, planes = _ordered(rows, "model"), _ordered(rows, "plane")
    labels = _ordered(rows, "label")
    names = {r["label"]: r["label_name"] for r in rows}
    angles = sorted(set(r["angle_deg"] for r in rows))
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(3.6 * len(labels), 3.0 * len(planes)), constrained_layout=True)
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(planes), len(labels), squeeze=False, sharex=True, sharey=True)
        for i, plane in enumerate(planes):
            for j, label in enumerate(labels):
                ax = axes[i][j]
                for model in models:
                    ax.plot(angles, [means.get((model, plane, a, label), np.nan) for a in angles], marker="o",
                            markersize=3, label=model)
                ax.set_title(f"{plane}: {names[label]} ({label})", fontsize=10)
                ax.set_ylim(0, 1.02)
                ax.grid(alpha=0.3)
                if i == len(planes) - 1:
                    ax.set_xlabel("rotation angle (deg)")
                if j == 0:
                    ax.set_ylabel("Dice (mean over cases)")
        axes[0][0].legend(fontsize=8, loc="lower left")
        fig.savefig(path, dpi=120)


def write_summary(rows: Sequence[dict], path: Path, models: Sequence[tuple[str, str]], folds: Sequence,
                  num_cases: int, files: Sequence[str]) -> None:
    """Markdown: mean foreground Dice per plane and angle for each model, then the same per label."""
    means = mean_dice(rows)
    planes, labels = _ordered(rows, "plane"), _ordered(rows, "label")
    names = {r["label"]: r["label_name"] for r in rows}
    angles = sorted(set(r["angle_deg"] for r in rows))
    lines = [
        "# Rotation robustness",
        "",
        f"{num_cases} test case(s), folds {', '.join(map(str, folds))}, planes {', '.join(planes)}, "
        f"angles {', '.join(f'{a:g}' for a in angles)} deg. Each case is rotated about its centre in physical "
        "space; Dice is nnU-Net's, per label, counting only voxels inside the original field of view, "
        "averaged over cases. `drop` is Dice at 0 deg minus the lowest Dice over the angles.",
        "",
        "Models:",
        *[f"- `{name}`: `{folder}`" for name, folder in models],
    ]
    for label in ["foreground", *labels]:
        title = "mean foreground Dice" if label == "foreground" else f"label {label} ({names[label]})"
        for plane in planes:
            lines += ["", f"## {plane}: {title}", "",
                      "| model | " + " | ".join(f"{a:g}°" for a in angles) + " | drop |",
                      "|---" * (len(angles) + 2) + "|"]
            for model, _ in models:
                values = [means.get((model, plane, a, label), np.nan) for a in angles]
                reference = values[angles.index(0.0)] if 0.0 in angles else np.nanmax(values)
                drop = reference - np.nanmin(values) if np.any(~np.isnan(values)) else np.nan
                lines.append(f"| {model} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {drop:.3f} |")
    lines += ["", "Files: " + ", ".join(f"`{f}`" for f in files), ""]
    Path(path).write_text("\n".join(lines))
