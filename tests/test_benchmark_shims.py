"""The benchmarks' trainer shims: a variant named ``Base[field=value,...]`` is the base trainer with those
fields of its ``E3nnSpec`` replaced and those trainer attributes set, under nnU-Net's constructor signature."""
import inspect
import sys

import pytest
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def runs():
    return load_benchmark("nnunet_runs")


def test_parse_variant(runs):
    assert runs.parse_variant("nnUNetTrainer") == ("nnUNetTrainer", {})
    assert runs.parse_variant("nnUNetTrainerE3nn[kernel_size=3, pooling=mean,consistency_weight=0.5]") == \
        ("nnUNetTrainerE3nn", {"kernel_size": 3, "pooling": "mean", "consistency_weight": 0.5})
    assert runs.variant_name("nnUNetTrainerE3nn[kernel_size=3,consistency_weight=0.5]") == \
        "nnUNetTrainerE3nn_kernel_size3_consistency_weight0p5"
    for bad in ("nnUNetTrainerE3nn[kernel_size]", "nnUNetTrainerE3nn[kernel_size=3", "a b"):
        with pytest.raises(ValueError, match="trainer"):
            runs.parse_variant(bad)


def test_budget_shim_of_a_variant_builds_that_network(runs, tmp_path, monkeypatch):
    from dataclasses import replace

    from nnunet_equivariant.training.offgrid_trainers import nnUNetTrainerE3nnConsistency

    name = runs.budget_trainer(tmp_path, "nnUNetTrainerE3nnConsistency[kernel_size=3,consistency_weight=0.5]",
                               60, 5, seed=1, clock="cpu")
    monkeypatch.syspath_prepend(str(tmp_path))
    shim = getattr(__import__(name), name)
    sys.modules.pop(name)
    assert issubclass(shim, nnUNetTrainerE3nnConsistency)
    assert shim.spec == replace(nnUNetTrainerE3nnConsistency.spec, kernel_size=3)
    assert "self.consistency_weight = 0.5" in (tmp_path / f"{name}.py").read_text(), "set after nnU-Net's __init__"
    # nnU-Net records the constructor's arguments by name
    assert list(inspect.signature(shim.__init__).parameters) == \
        list(inspect.signature(nnUNetTrainerE3nnConsistency.__init__).parameters)


def test_variant_of_an_nnunet_trainer_sets_its_attributes_after_nnunets_init(runs, tmp_path, monkeypatch):
    """``initial_lr`` is set by nnU-Net's ``__init__``: the variant's value must come after it."""
    from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerVanillaAdam

    name = runs.schedule_trainer(tmp_path, "nnUNetTrainerVanillaAdam[initial_lr=0.005]", 2, 5)
    monkeypatch.syspath_prepend(str(tmp_path))
    shim = getattr(__import__(name), name)
    sys.modules.pop(name)
    assert shim.__mro__[1] is nnUNetTrainerVanillaAdam
    source = inspect.getsource(shim.__init__)
    assert source.index("super().__init__") < source.index("self.initial_lr = 0.005")
    with pytest.raises(ValueError, match="nnUNetTrainerNoSuchThing"):
        runs.schedule_trainer(tmp_path, "nnUNetTrainerNoSuchThing", 2, 5)
