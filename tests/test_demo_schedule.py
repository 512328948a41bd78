"""The demo's choice of trainers and epochs, without training anything."""
import pytest

from nnunet_equivariant.demo import SCHEDULES, _trainer_classes, run_demo


def test_a_variant_gets_the_epochs_of_the_trainer_it_derives_from():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn, nnUNetTrainerE3nnLean
    from nnunet_equivariant.training.mirror import nnUNetTrainerMirror
    from nnunet_equivariant.training.rotation_baselines import nnUNetTrainerNoRot

    cpu = SCHEDULES["cpu"]
    assert cpu.epochs_for(nnUNetTrainerE3nn) == cpu.epochs_for(nnUNetTrainerE3nnLean) == 12
    assert cpu.epochs_for(nnUNetTrainerNoRot) == cpu.epochs_for(nnUNetTrainer) == 5
    assert cpu.epochs_for(nnUNetTrainerMirror) == 5, "not steerable: the baseline's schedule"


def test_trainers_are_found_as_nnunet_finds_them_and_an_unknown_one_is_named(tmp_path):
    classes = _trainer_classes(["nnUNetTrainerE3nnLean", "nnUNetTrainerNoRot", "nnUNetTrainerE3nnLean"])
    assert list(classes) == ["nnUNetTrainerE3nnLean", "nnUNetTrainerNoRot"]
    out = tmp_path / "demo"
    with pytest.raises(ValueError, match="no trainer class 'nnUNetTrainerNoSuch'"):
        run_demo(out, quick=True, device="cpu", trainers=["nnUNetTrainerE3nn", "nnUNetTrainerNoSuch"])
    assert not out.exists(), "checked before anything is written"
    with pytest.raises(ValueError, match="a list of one or more"):
        run_demo(out, quick=True, device="cpu", trainers="nnUNetTrainerE3nn")
