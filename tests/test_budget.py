"""Wall-clock budget: nnU-Net's own epoch loop ends after the epoch that spends the budget, and the poly
learning rate follows the budget's fraction, on a simulated clock (no training)."""
import json

import numpy as np
import pytest
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_equivariant.training import budget
from nnunet_equivariant.training.budget import WallClockBudgetMixin


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class _LoopOnly:
    """Just the hooks nnU-Net's ``run_training`` calls; a training iteration costs one simulated second,
    a validation iteration a quarter."""

    run_training = nnUNetTrainer.run_training  # nnU-Net's real epoch loop

    def __init__(self, folder, clock, num_epochs):
        self.output_folder, self.clock = str(folder), clock
        self.num_epochs, self.current_epoch = num_epochs, 0
        self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 3, 2
        self.initial_lr = 1e-2
        self.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=self.initial_lr)
        self.dataloader_train = self.dataloader_val = iter(int, 1)  # endless
        self.lrs, self.log, self.ended = [], [], 0

    def print_to_log_file(self, *args):
        self.log.append(" ".join(map(str, args)))

    def on_train_start(self):
        self.lr_scheduler = PolyLRScheduler(self.optimizer, self.initial_lr, self.num_epochs)

    def on_epoch_start(self):
        pass

    def on_train_epoch_start(self):
        self.lr_scheduler.step(self.current_epoch)  # as nnU-Net does
        self.lrs.append(self.optimizer.param_groups[0]["lr"])

    def train_step(self, batch):
        self.clock.now += 1.0
        return {"loss": 0.0}

    def on_train_epoch_end(self, outputs):
        pass

    def on_validation_epoch_start(self):
        pass

    def validation_step(self, batch):
        self.clock.now += 0.25
        return {}

    def on_validation_epoch_end(self, outputs):
        pass

    def on_epoch_end(self):
        self.current_epoch += 1

    def on_train_end(self):
        self.ended += 1


class _Budgeted(WallClockBudgetMixin, _LoopOnly):
    pass


def test_budget_ends_nnunets_loop_and_anneals_over_the_seconds(tmp_path, monkeypatch):
    clock = _Clock()
    monkeypatch.setitem(budget._CLOCKS, "wall", clock)
    trainer = _Budgeted(tmp_path, clock, num_epochs=10 ** 6)
    trainer.training_budget_s = 10.0
    trainer.run_training()
    # an epoch is 3.5 s: epochs end at 3.5, 7, 10.5 s -> the third spends the budget
    assert trainer.current_epoch == 3 and trainer.ended == 1
    record = json.loads((tmp_path / "training_budget.json").read_text())
    assert record["iterations"] == 9 and record["epochs"] == 3 and record["trained_s"] == 10.5
    expected = [1e-2 * (1 - f) ** 0.9 for f in (0.0, 0.35, 0.7)]  # poly by the fraction of seconds spent
    np.testing.assert_allclose(trainer.lrs, expected, rtol=1e-12)


def test_without_budget_the_epoch_schedule_is_nnunets(tmp_path, monkeypatch):
    clock = _Clock()
    monkeypatch.setitem(budget._CLOCKS, "wall", clock)
    trainer = _Budgeted(tmp_path, clock, num_epochs=4)
    trainer.run_training()
    assert trainer.current_epoch == 4 and trainer.ended == 1
    np.testing.assert_allclose(trainer.lrs, [1e-2 * (1 - e / 4) ** 0.9 for e in range(4)], rtol=1e-12)
    assert not (tmp_path / "training_budget.json").exists()


def test_budget_must_be_positive(tmp_path, monkeypatch):
    monkeypatch.setitem(budget._CLOCKS, "wall", _Clock())
    trainer = _Budgeted(tmp_path, _Clock(), num_epochs=10)
    trainer.training_budget_s = 0
    with pytest.raises(ValueError, match="training_budget_s must be > 0 seconds, got 0"):
        trainer.run_training()


def test_cpu_clock_counts_only_its_own_seconds(tmp_path, monkeypatch):
    """On the CPU clock, seconds the process does not run (other jobs' load) do not count."""
    wall, cpu = _Clock(), _Clock()
    monkeypatch.setitem(budget._CLOCKS, "wall", wall)
    monkeypatch.setitem(budget._CLOCKS, "cpu", cpu)
    trainer = _Budgeted(tmp_path, cpu, num_epochs=10 ** 6)  # iterations advance the CPU clock
    trainer.training_budget_s, trainer.budget_clock = 10.0, "cpu"
    wall.now += 1000.0  # a long wait on a busy machine: not training
    trainer.run_training()
    assert trainer.current_epoch == 3
    assert json.loads((tmp_path / "training_budget.json").read_text())["clock"] == "cpu"
    trainer = _Budgeted(tmp_path, cpu, num_epochs=10)
    trainer.training_budget_s, trainer.budget_clock = 10.0, "gpu"
    with pytest.raises(ValueError, match="budget_clock must be one of \\['cpu', 'wall'\\], got 'gpu'"):
        trainer.run_training()
