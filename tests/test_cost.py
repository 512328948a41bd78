"""Epoch times read back from nnU-Net's checkpoint logging, or from its text log."""
import pytest

from nnunet_equivariant.evaluation.cost import training_times


def test_epoch_times_from_checkpoint_logging(tmp_path):
    checkpoint = {"logging": {"epoch_start_timestamps": [100.0, 110.0, 125.0],
                              "epoch_end_timestamps": [108.0, 120.0, 130.0]}}
    (tmp_path / "training_log_2026_1_1_00_00_00.txt").write_text("Epoch time: 99.0 s\n")
    times = training_times(tmp_path, checkpoint)
    assert (times.epochs, times.median_epoch_seconds, times.total_seconds) == (3, 8.0, 23.0)
    assert times.source == "checkpoint_final.pth logging", "the checkpoint wins over the text log"


def test_epoch_times_from_the_newest_text_log(tmp_path):
    import os

    old = tmp_path / "training_log_2026_9_1_00_00_00.txt"  # sorts after the newer one by name
    old.write_text("Epoch time: 99.0 s\n")
    os.utime(old, (1_000_000, 1_000_000))
    (tmp_path / "training_log_2026_10_2_00_00_00.txt").write_text(
        "2026-01-02 00:00:01: Epoch 0\n2026-01-02 00:00:13: Epoch time: 12.5 s\n"
        "2026-01-02 00:00:14: Epoch 1\n2026-01-02 00:00:24: Epoch time: 10.0 s\n")
    times = training_times(tmp_path, {"logging": {}})
    assert (times.epochs, times.median_epoch_seconds, times.total_seconds) == (2, 11.25, 22.5)
    assert times.source == "training_log_2026_10_2_00_00_00.txt"


def test_no_epoch_times(tmp_path):
    assert training_times(tmp_path) is None


def test_learning_curve_from_checkpoint_logging(tmp_path):
    checkpoint = {"logging": {"epoch_start_timestamps": [100.0, 110.0, 125.0],
                              "epoch_end_timestamps": [108.0, 120.0, 130.0],
                              "mean_fg_dice": [0.1, 0.5, 0.3], "ema_fg_dice": [0.1, 0.14, 0.156],
                              "dice_per_class_or_region": [[0.2, 0.0], [0.6, 0.4], [0.3, 0.3]]}}
    times = training_times(tmp_path, checkpoint)
    assert times.curve_seconds == (8.0, 18.0, 23.0), "cumulative epoch times"
    assert times.pseudo_dice == (0.1, 0.5, 0.3) and times.ema_pseudo_dice == (0.1, 0.14, 0.156)
    assert times.pseudo_dice_per_label == ((0.2, 0.0), (0.6, 0.4), (0.3, 0.3))


def test_learning_curve_from_the_text_log_recomputes_nnunets_ema(tmp_path):
    """The curve as nnU-Net prints it (numpy 2's ``np.float32(...)``, a label never predicted as nan): the
    nan-mean per epoch, and the EMA as nnU-Net's logger computes it."""
    (tmp_path / "training_log_2026_10_2_00_00_00.txt").write_text(
        "2026-01-02 00:00:12: Pseudo dice [np.float32(0.2), np.float32(0.4)] \n"
        "2026-01-02 00:00:13: Epoch time: 12.5 s\n"
        "2026-01-02 00:00:23: Pseudo dice [np.float32(0.8), np.float32(nan)] \n"
        "2026-01-02 00:00:24: Epoch time: 10.0 s\n"
        "2026-01-02 00:00:33: Pseudo dice [0.5, 0.7] \n"
        "2026-01-02 00:00:34: Epoch time: 1e1 s\n")
    times = training_times(tmp_path)
    assert times.curve_seconds == (12.5, 22.5) and times.epochs == 2, "'1e1' is not nnU-Net's format: not an epoch"
    assert times.pseudo_dice == pytest.approx((0.3, 0.8))
    assert times.pseudo_dice_per_label[0] == pytest.approx((0.2, 0.4))
    assert times.pseudo_dice_per_label[1][0] == pytest.approx(0.8) and len(times.pseudo_dice_per_label) == 2
    assert times.ema_pseudo_dice == pytest.approx((0.3, 0.9 * 0.3 + 0.1 * 0.8))
