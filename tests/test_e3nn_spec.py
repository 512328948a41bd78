"""E3nnSpec: one validated recipe per steerable network, read alike by trainer, network, planner and export."""
import dataclasses
import json

import pytest
import torch

from nnunet_equivariant.networks import E3nnSpec, E3nnUNet
from nnunet_equivariant.networks.e3nn_spec import COMPACT_SPEC
from nnunet_equivariant.testing import assert_equivariant, grid_rotations, plans_configuration
from nnunet_equivariant.training import e3nn as trainers


def test_spec_round_trips_through_json_and_rejects_unknown_fields():
    spec = E3nnSpec(symmetry="o3", kernel_size=3, radial_basis="smooth_finite", antialias=0.5, width_scale=0.5,
                    pooling="mean", head="invariants")
    assert E3nnSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert E3nnSpec.coerce(spec.to_dict()) == spec and E3nnSpec.coerce(None) == E3nnSpec()
    with pytest.raises(ValueError, match=r"unknown E3nnSpec fields \['kernel'\]"):
        E3nnSpec.from_dict({"kernel": 3})
    with pytest.raises(ValueError, match="spec must be an E3nnSpec, a dict of its fields or None, got str"):
        E3nnSpec.coerce("so3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.kernel_size = 5


def test_ratio_and_parity_follow_the_group():
    assert E3nnSpec().ratio == "8x0e+4x1e+2x2e" and not E3nnSpec().parity
    assert E3nnSpec(symmetry="o3").ratio == "8x0e+4x1o+2x2e" and E3nnSpec(symmetry="o3").parity
    assert str(E3nnSpec(irreps_ratio="4x0e+2x1e+1x2e", width_scale=0.5).stage_irreps(64)) == "8x0e+4x1e+2x2e"


def test_every_trainer_variant_is_its_parents_spec_with_the_fields_it_names():
    """The default is ``COMPACT_SPEC``, the paper's network ``E3nnSpec()``; variants are ``replace(parent.spec,
    ...)``: every field they do not name is their parent's (the default's or the paper's network's)."""
    assert trainers.nnUNetTrainerE3nn.spec == COMPACT_SPEC == E3nnSpec(
        kernel_size=3, irreps_ratio="12x0e+3x1e+1x2e", head="invariants")
    assert trainers.nnUNetTrainerE3nnShells.spec == E3nnSpec()
    of_default = {"nnUNetTrainerE3nnNoRot": {}}
    of_paper = {
        "nnUNetTrainerE3nnShells": {"radial_basis": "gaussian_shells"},
        "nnUNetTrainerE3nnO3": {"symmetry": "o3"},
        "nnUNetTrainerE3nnRotDA": {},
        "nnUNetTrainerE3nn_30x0e": {"irreps_ratio": "30x0e"},
        "nnUNetTrainerE3nn_8x8x0": {"irreps_ratio": "8x0e+8x1e"},
        "nnUNetTrainerE3nn_4x4x4": {"irreps_ratio": "4x0e+4x1e+4x2e"},
        "nnUNetTrainerE3nn_k3": {"kernel_size": 3},
        "nnUNetTrainerE3nnPaperBasis": {"radial_basis": "smooth_finite"},
        "nnUNetTrainerE3nnAntialias": {"antialias": 0.5, "upsample_antialias": 0.5},
        "nnUNetTrainerE3nnLean": {"irreps_ratio": "4x0e+2x1e+1x2e", "width_scale": 0.5},
        "nnUNetTrainerE3nnMeanPool": {"pooling": "mean"},
        "nnUNetTrainerE3nnInvariantHead": {"head": "invariants"},
    }
    assert set(of_default) | set(of_paper) == set(trainers.__all__[1:]), "every public variant is listed"
    for base, named in ((trainers.nnUNetTrainerE3nn.spec, of_default), (E3nnSpec(), of_paper)):
        for name, fields in named.items():
            trainer = getattr(trainers, name)
            assert trainer.spec == dataclasses.replace(base, **fields), name
            assert trainer.symmetry == trainer.spec.symmetry, f"{name}: the mixins read the spec's group"


def test_a_new_variant_is_one_line_and_its_network_follows(float64_default):
    class nnUNetTrainerE3nnSilu(trainers.nnUNetTrainerE3nn):
        spec = dataclasses.replace(trainers.nnUNetTrainerE3nn.spec, scalar_activation="silu", kernel_size=3)

    config = plans_configuration([[1, 1, 1], [2, 2, 2]], None, [8, 16], patch_size=[8, 8, 8], spacing=[1.0] * 3)
    net = nnUNetTrainerE3nnSilu.build_network_architecture(None, config, 1, 2, False).eval()
    assert net.spec == nnUNetTrainerE3nnSilu.spec
    blocks = [m for m in net.modules() if type(m).__name__ == "SteerableBlock"]
    assert blocks and all(b.gate.scalar_activation == "silu" and b.conv.kernel_shape == (3, 3, 3) for b in blocks)
    torch.manual_seed(0)
    assert_equivariant(net, torch.randn(1, 1, 8, 8, 8), grid_rotations(), rep_in=None, rep_out=None, tol=1e-10)


def test_loose_class_attributes_of_earlier_versions_are_refused():
    """A subclass that still sets ``kernel_size = 3`` would silently train the default network."""
    with pytest.raises(TypeError, match=r"sets \['kernel_size'\] as class attributes.*spec = replace\("
                                        r"nnUNetTrainerE3nn.spec, kernel_size=\.\.\.\)"):
        type("nnUNetTrainerE3nnOld", (trainers.nnUNetTrainerE3nn,), {"kernel_size": 3})
    with pytest.raises(TypeError, match="spec must be an E3nnSpec, got dict"):
        type("nnUNetTrainerE3nnDict", (trainers.nnUNetTrainerE3nn,), {"spec": {"kernel_size": 3}})


def test_the_network_holds_the_spec_it_was_built_with():
    spec = E3nnSpec(kernel_size=3, antialias=0.5)
    net = E3nnUNet(1, 2, 2, [8, 16], [1, 2], 1, 1, spec=spec.to_dict())
    assert net.spec == spec and net.symmetry == "so3"
    assert type(net.encoder.stages[1][0]).__name__ == "GaussianBlur3d"


def test_pooling_is_checked_and_old_plans_specs_read_as_the_norm_max():
    """``pooling`` names its bad value; a spec dict written before the field existed (plans' sizing entry)
    is the default spec, so the trainer does not warn that such plans were sized for another network."""
    from nnunet_equivariant.training.e3nn import _same_spec

    with pytest.raises(ValueError, match="pooling must be one of \\['norm_max', 'mean'\\], got 'max'"):
        E3nnSpec(pooling="max")
    old = {k: v for k, v in E3nnSpec().to_dict().items() if k != "pooling"}
    assert _same_spec(old, E3nnSpec()) and not _same_spec(old, E3nnSpec(pooling="mean"))
    assert not _same_spec(None, E3nnSpec()) and not _same_spec({"kernel": 3}, E3nnSpec())


def test_head_is_checked_and_old_plans_specs_read_as_the_scalar_head():
    from nnunet_equivariant.training.e3nn import _same_spec

    with pytest.raises(ValueError, match="head must be one of \\['scalars', 'invariants'\\], got 'norms'"):
        E3nnSpec(head="norms")
    old = {k: v for k, v in E3nnSpec().to_dict().items() if k not in ("pooling", "head")}
    assert _same_spec(old, E3nnSpec()) and not _same_spec(old, E3nnSpec(head="invariants"))


def test_with_symmetry_keeps_the_ratio_in_the_groups_natural_parities():
    o3_default = COMPACT_SPEC.with_symmetry("o3")
    assert o3_default.symmetry == "o3" and o3_default.irreps_ratio == "12x0e+3x1o+1x2e"
    assert o3_default.with_symmetry("so3") == COMPACT_SPEC, "and back"
    assert dataclasses.replace(o3_default, kernel_size=5, irreps_ratio=None, head="scalars") \
        == E3nnSpec(symmetry="o3"), "only the group and the ratio's parities change"
    assert E3nnSpec().with_symmetry("o3") == E3nnSpec(symmetry="o3"), "a ratio left to the group stays so"
    with pytest.raises(ValueError, match="'so2'"):
        COMPACT_SPEC.with_symmetry("so2")


def test_plan_overrides_of_the_group_keep_the_parities_and_name_a_trainer_without_a_spec():
    from nnunet_equivariant.planning.plan_and_preprocess import overridden_spec

    assert overridden_spec(COMPACT_SPEC, {"symmetry": "o3"}, "nnUNetTrainerE3nn").irreps_ratio == "12x0e+3x1o+1x2e"
    given = overridden_spec(COMPACT_SPEC, {"symmetry": "o3", "irreps_ratio": "8x0e+4x1e"}, "nnUNetTrainerE3nn")
    assert given.irreps_ratio == "8x0e+4x1e", "an explicit ratio is taken as given"
    assert overridden_spec(COMPACT_SPEC, {"kernel_size": 5}, "nnUNetTrainerE3nn").kernel_size == 5
    with pytest.raises(ValueError, match="nnUNetTrainer has no steerable network"):
        overridden_spec(None, {"symmetry": "o3"}, "nnUNetTrainer")
