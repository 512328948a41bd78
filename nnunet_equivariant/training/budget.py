"""Training on a time budget: the same seconds for every trainer, not the same epochs.

A trainer that costs more per iteration gets fewer iterations; what is compared is what each learns per
second. nnU-Net's ``run_training`` loops over ``range(current_epoch, num_epochs)``; this mixin ends the loop
after the first epoch that finishes past the budget (``on_epoch_end`` raises, ``run_training`` catches and
runs nnU-Net's own ``on_train_end``: final checkpoint, data loaders shut down), and drives nnU-Net's poly
learning rate by the fraction of the budget spent instead of the fraction of epochs, so every trainer
anneals to (almost) zero at its end whatever its speed.

Convention
----------
- The clock starts when ``on_train_start`` has returned (data loaders, network and optimiser built) and
  counts everything in the epochs: training and validation iterations, logging, checkpoints.
- ``budget_clock``: ``"wall"`` (default) counts wall-clock seconds; ``"cpu"`` counts the CPU seconds of
  the training process, all its threads (``time.process_time``; with nnU-Net's in-process augmentation on
  the CPU, augmentation included). On a machine shared with other jobs wall-clock seconds depend on their
  load, CPU seconds much less: the fair budget there. On an idle machine CPU seconds are about the threads
  used times the wall-clock seconds.
- Training overshoots the budget by less than one epoch: keep epochs short (few iterations) for a fine
  grain. ``training_budget.json`` in the fold's output folder records the budget, the seconds and
  iterations actually trained and the system load at start and end (shared machines make seconds noisy).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

__all__ = ["WallClockBudgetMixin"]

_CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}  # the tests replace them


class _BudgetSpent(Exception):
    """Raised by ``on_epoch_end`` to leave nnU-Net's epoch loop."""


class WallClockBudgetMixin:
    """Trainer mixin. ``training_budget_s``: seconds of training (``None``: nnU-Net's epoch schedule) on the
    ``budget_clock`` (``"wall"`` or ``"cpu"``).
    Set ``num_epochs`` high enough never to be reached (the subclass's ``__init__``); it is only the
    length of nnU-Net's loop."""

    training_budget_s: float | None = None
    budget_clock: str = "wall"

    def _clock(self) -> float:
        if self.budget_clock not in _CLOCKS:
            raise ValueError(f"budget_clock must be one of {sorted(_CLOCKS)}, got {self.budget_clock!r}")
        return _CLOCKS[self.budget_clock]()

    def on_train_start(self):
        super().on_train_start()
        if self.training_budget_s is not None:
            if not self.training_budget_s > 0:
                raise ValueError(f"training_budget_s must be > 0 seconds, got {self.training_budget_s}")
            self._budget_start = self._clock()
            self._budget_wall_start = time.perf_counter()
            self._budget_load_start = os.getloadavg()
            self._budget_iterations = 0
            scheduler = self.lr_scheduler
            if not hasattr(scheduler, "max_steps"):
                raise ValueError(f"a wall-clock budget needs nnU-Net's PolyLRScheduler, got {type(scheduler).__name__}")
            by_epoch = scheduler.step
            # nnU-Net calls step(current_epoch) at each epoch's start: answer with the budget's fraction instead
            scheduler.step = lambda current_step=None: by_epoch(min(self._budget_fraction(), 1.0) * scheduler.max_steps)
            self.print_to_log_file(f"time budget: {self.training_budget_s} s ({self.budget_clock} clock) of training")

    def _budget_fraction(self) -> float:
        return (self._clock() - self._budget_start) / self.training_budget_s

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        if self.training_budget_s is not None:
            self._budget_iterations += len(train_outputs)

    def on_epoch_end(self):
        super().on_epoch_end()
        if self.training_budget_s is not None and self._budget_fraction() >= 1.0:
            seconds = self._clock() - self._budget_start
            record = {"budget_s": self.training_budget_s, "clock": self.budget_clock, "trained_s": round(seconds, 2),
                      "wall_s": round(time.perf_counter() - self._budget_wall_start, 2),
                      "epochs": self.current_epoch, "iterations": self._budget_iterations,
                      "s_per_iteration": round(seconds / max(self._budget_iterations, 1), 4),
                      "load_start": list(self._budget_load_start), "load_end": list(os.getloadavg())}
            (Path(self.output_folder) / "training_budget.json").write_text(json.dumps(record, indent=2))
            self.print_to_log_file(f"time budget spent: {record}")
            raise _BudgetSpent

    def run_training(self):
        try:
            super().run_training()
        except _BudgetSpent:
            self.on_train_end()
