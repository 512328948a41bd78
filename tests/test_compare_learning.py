"""compare's learning per second of training: nnU-Net's EMA pseudo Dice at the training seconds every fold
reached, from hand-made learning curves, and the report's files."""
import csv
import math

import pytest

from nnunet_equivariant.evaluation.compare import TrainerEntry
from nnunet_equivariant.evaluation.compare_report import (ReportContext, comparison_rows, dice_at,
                                                          equal_training_time, write_all)
from nnunet_equivariant.evaluation.cost import TrainingTimes


def _times(seconds, ema):
    return TrainingTimes(len(seconds), 1.0, seconds[-1], "test", tuple(seconds), tuple(ema), tuple(ema))


def _entries(tmp_path):
    # fast: many cheap epochs; slow: few expensive ones, better at its end but worse at the same seconds
    fast = TrainerEntry("nnUNetTrainer", "nnUNetPlans", tmp_path / "a", name="fast",
                        times={0: _times([10, 20, 30, 40, 50, 60], [0.1, 0.3, 0.5, 0.6, 0.65, 0.7]),
                               1: _times([12, 24, 36, 48], [0.2, 0.4, 0.5, 0.55])})
    slow = TrainerEntry("nnUNetTrainerE3nn", "nnUNetPlans", tmp_path / "b", name="slow",
                        times={0: _times([30, 60, 90], [0.2, 0.5, 0.8])})
    return [fast, slow]


def test_dice_at_the_training_seconds_every_fold_reached(tmp_path):
    fast, slow = _entries(tmp_path)
    assert equal_training_time([fast, slow]) == 48, "the shortest training of any fold"
    assert dice_at(fast.times[0], 48) == 0.6 and dice_at(fast.times[1], 48) == 0.55
    assert dice_at(slow.times[0], 48) == 0.2, "the last epoch that ended by then"
    assert math.isnan(dice_at(slow.times[0], 29))
    context = ReportContext("Dataset1", "3d_fullres", [0, 1], ["axial"], [0.0], 0, "cpu", 1, "compare ...")
    rows = comparison_rows([fast, slow], [], context)
    assert [r["ema_pseudo_dice_at_equal_time"] for r in rows] == pytest.approx([0.575, 0.2])
    assert [r["ema_pseudo_dice_final"] for r in rows] == pytest.approx([0.625, 0.8])
    assert rows[1]["equal_time_s"] == 48


def test_report_writes_the_curves_and_says_who_learns_faster(tmp_path):
    entries = _entries(tmp_path)
    context = ReportContext("Dataset1", "3d_fullres", [0, 1], ["axial"], [0.0], 1, "cpu", 1, "compare ...")
    rotation = [{"model": e.name, "case": "c1", "plane": "axial", "angle_deg": 0.0, "label": 1, "label_name": "a",
                 "dice": 0.5} for e in entries]
    rows = comparison_rows(entries, rotation, context)
    out = tmp_path / "report"
    out.mkdir()
    write_all(out, entries, rows, rotation, context)
    with open(out / "learning_curves.csv") as f:
        curves = list(csv.DictReader(f))
    assert len(curves) == 6 + 4 + 3
    assert {(r["model"], r["fold"], r["epoch"], r["training_s"], r["ema_pseudo_dice"]) for r in curves} >= {
        ("slow", "0", "2", "90", "0.8"), ("fast", "1", "3", "48", "0.55")}
    assert (out / "dice_vs_training_seconds.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "| fast | 0.575 | 0.625 |" in report and "| slow | 0.200 | 0.800 |" in report
    assert "- **nnU-Net's EMA pseudo Dice after the same training seconds** (higher is better): **fast** 0.5750; " \
           "slow 0.2000" in report
