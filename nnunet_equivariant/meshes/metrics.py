"""Per-vertex segmentation metrics of labelled meshes, averaged the way IntrA's benchmark does.

For each mesh and class ``c``: ``IoU_c = |P_c & G_c| / |P_c | G_c|`` and
``DSC_c = 2 |P_c & G_c| / (|P_c| + |G_c|)`` over its vertices, plus the vertex accuracy. IntrA's benchmark
(and the loaders derived from it) computes these per sample and averages each class over the samples of
the test fold; ``summarize`` does the same. A class absent from both prediction and ground truth of a mesh
has an undefined score (NaN) for that mesh and is left out of that class's mean.
"""
from __future__ import annotations

import numpy as np

__all__ = ["vertex_metrics", "summarize"]


def vertex_metrics(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> dict:
    """Scores of one mesh: ``{"accuracy": float, "iou": [C floats], "dsc": [C floats]}``."""
    predicted = np.asarray(predicted).ravel()
    truth = np.asarray(truth).ravel()
    if predicted.shape != truth.shape:
        raise ValueError(f"{len(predicted)} predicted labels for {len(truth)} vertices")
    if len(truth) == 0:
        raise ValueError("no vertices to evaluate")
    for name, lab in (("predicted", predicted), ("true", truth)):
        if lab.min() < 0 or lab.max() >= num_classes:
            raise ValueError(f"{name} labels {sorted(set(lab.tolist()))} outside [0, {num_classes})")
    iou, dsc = [], []
    for c in range(num_classes):
        p, g = predicted == c, truth == c
        inter, union, total = int(np.sum(p & g)), int(np.sum(p | g)), int(p.sum() + g.sum())
        iou.append(inter / union if union else float("nan"))
        dsc.append(2 * inter / total if total else float("nan"))
    return {"accuracy": float(np.mean(predicted == truth)), "iou": iou, "dsc": dsc}


def summarize(per_mesh: list[dict], class_names: tuple[str, ...] | list[str]) -> dict:
    """Mean over meshes of each class's IoU and DSC (NaN left out) and of the accuracy.

    Returns ``{"num_meshes", "accuracy", "iou": {class: mean}, "dsc": {class: mean}, "mean_iou", "mean_dsc"}``.
    """
    if not per_mesh:
        raise ValueError("no meshes to summarize")
    iou = np.array([m["iou"] for m in per_mesh], dtype=np.float64)
    dsc = np.array([m["dsc"] for m in per_mesh], dtype=np.float64)
    if iou.shape[1] != len(class_names):
        raise ValueError(f"{iou.shape[1]} classes scored but {len(class_names)} class names given")

    def nanmean(a):
        return float(np.mean(a[~np.isnan(a)])) if np.any(~np.isnan(a)) else float("nan")

    iou_c = {name: nanmean(iou[:, c]) for c, name in enumerate(class_names)}
    dsc_c = {name: nanmean(dsc[:, c]) for c, name in enumerate(class_names)}
    return {"num_meshes": len(per_mesh), "accuracy": float(np.mean([m["accuracy"] for m in per_mesh])),
            "iou": iou_c, "dsc": dsc_c, "mean_iou": float(np.mean(list(iou_c.values()))),
            "mean_dsc": float(np.mean(list(dsc_c.values())))}
