"""E3nnResEncUNet at the topologies nnU-Net's own ResEnc M/L/XL planners write: exact grid equivariance in
float64, nnU-Net's network protocol (deep supervision, state dict, memory count), and the plans reader."""
import pytest
import torch
from resenc_plans import resenc_configuration, with_features

from nnunet_equivariant.layers import (GaussianBlur3d, MeanPool3d, NormMaxPool3d, SteerableBlock,
                                       SteerableResidualBlock, TrilinearUpsample)
from nnunet_equivariant.networks.e3nn_resenc_unet import E3nnResEncUNet, e3nn_resenc_unet_kwargs
from nnunet_equivariant.networks.e3nn_spec import E3nnSpec
from nnunet_equivariant.symmetry import get_symmetry
from nnunet_equivariant.testing import assert_equivariant, grid_rotations, grid_symmetries, plans_configuration
from nnunet_equivariant.training import e3nn as trainers

TINY = {"so3": ["1x0e + 1x1e + 1x2e"] + ["2x0e + 1x1e + 1x2e"] * 4,
        "o3": ["1x0e + 1x1o + 1x2e"] + ["2x0e + 1x1o + 1x2e"] * 4}  # (the group ratio 8x0e+4x1o+2x2e)


def _net(dataset: str, symmetry: str = "so3", n_blocks=None, deep_supervision=True, **spec):
    """The planned topology (M preset) with tiny irreps, random affine norms (the zero-initialised last norm
    of every block would hide the residual path), in eval mode."""
    kwargs = e3nn_resenc_unet_kwargs(with_features(resenc_configuration(dataset), TINY[symmetry]))
    if n_blocks is not None:
        kwargs["n_blocks_per_stage"] = n_blocks
    net = E3nnResEncUNet(1, 2, **kwargs, deep_supervision=deep_supervision,
                         spec=E3nnSpec(symmetry=symmetry, **spec))
    net.apply(net.initialize)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "norm" in name:
                p.normal_()
    return net.eval()


def _generators(symmetry: str) -> list[torch.Tensor]:
    """Two 90-degree rotations about different axes (they generate the 24 rotations) and, for O(3), a
    reflection: equivariance to these is equivariance to the whole grid group."""
    elements = get_symmetry(symmetry).grid_elements()
    generators = [next(R for R in elements if torch.trace(R) == 1 and R[a, a] == 1) for a in (0, 1)]
    return generators + [R for R in elements if torch.det(R) < 0][:1]


def test_planned_isotropic_topology(float64_default):
    net = _net("isotropic")
    assert net.encoder.strides == [(1, 1, 1)] + [(2, 2, 2)] * 4
    assert [len(stage) for stage in net.encoder.stages] == [1, 3, 4, 6, 6], "the planner's n_blocks_per_stage"
    assert [len(stage) for stage in net.decoder.stages] == [1, 1, 1, 1]
    first = [stage[0] for stage in net.encoder.stages]
    assert [b.stride for b in first] == net.encoder.strides and all(b.stride == (1, 1, 1) for b in net.encoder.stages[3][1:])
    assert [b.skip is None for b in first] == [True, False, True, True, True], "projection where the irreps change"


@pytest.mark.parametrize("symmetry", ["so3", "o3"])
def test_full_preset_network_is_equivariant_to_the_group_generators(float64_default, symmetry):
    """All 20 residual blocks of the planned 5 stages; 16^3 is the smallest size the strides allow."""
    net = _net("isotropic", symmetry)
    x = torch.randn(1, 1, 16, 16, 16)
    assert_equivariant(net, x, _generators(symmetry), tol=1e-10)


def test_so3_network_is_equivariant_on_all_24_rotations(float64_default):
    """The planned strides and stages, two blocks per stage (one pooling/projecting, one identity-skip)."""
    net = _net("isotropic", n_blocks=[1, 2, 2, 2, 2])
    assert_equivariant(net, torch.randn(1, 1, 16, 16, 16), grid_rotations(), tol=1e-10)


def test_o3_network_is_equivariant_on_all_48_symmetries(float64_default):
    """The planned strides and stages, one block per stage (a projected skip in stage 1, identity elsewhere)."""
    net = _net("isotropic", "o3", n_blocks=[1, 1, 1, 1, 1])
    assert_equivariant(net, torch.randn(1, 1, 16, 16, 16), grid_symmetries(), tol=1e-10)


def test_mean_pooling_network_is_equivariant_to_the_o3_generators(float64_default):
    """``pooling="mean"`` reaches every residual block that pools; exact on the generators of the 48 grid
    symmetries (so on all of them; the 48 one by one take a minute here, the E3nnUNet test runs them all);
    the count is the norm max's."""
    net = _net("isotropic", "o3", n_blocks=[1, 1, 1, 1, 1], pooling="mean")
    pools = [m.pool for m in net.modules() if isinstance(m, SteerableResidualBlock) and m.pool is not None]
    assert len(pools) == 4 and all(isinstance(p, MeanPool3d) for p in pools)
    assert_equivariant(net, torch.randn(1, 1, 16, 16, 16), _generators("o3"), tol=1e-10)
    same = _net("isotropic", "o3", n_blocks=[1, 1, 1, 1, 1])
    assert net.compute_conv_feature_map_size((16, 16, 16)) == same.compute_conv_feature_map_size((16, 16, 16))


def test_invariant_head_network_is_equivariant_to_the_o3_generators(float64_default):
    """``head="invariants"`` reaches the ResEnc network's heads (its decoder is E3nnUNet's)."""
    net = _net("isotropic", "o3", n_blocks=[1, 1, 1, 1, 1], head="invariants")
    assert all(type(h).__name__ == "InvariantHead" for h in net.decoder.seg_layers)
    assert_equivariant(net, torch.randn(1, 1, 16, 16, 16), _generators("o3"), tol=1e-10)


def test_anisotropic_plans_network_is_equivariant_to_the_symmetries_of_its_grid(float64_default):
    """(3, 0.8, 0.8) mm with strides [1,2,2] first: the 8 rotations that keep the x axis stay exact."""
    net = _net("anisotropic", n_blocks=[1, 2, 2, 2, 2])
    assert net.encoder.stages[0][0].block1.conv.kernel_shape[0] < net.encoder.stages[0][0].block1.conv.kernel_shape[1]
    grid = [R for R in grid_rotations() if abs(R[0, 0]) == 1]
    assert len(grid) == 8
    assert_equivariant(net, torch.randn(1, 1, 4, 16, 16), grid, tol=1e-10)


def test_deep_supervision_outputs_and_the_same_state_dict(float64_default):
    torch.manual_seed(0)
    with_ds = _net("anisotropic", n_blocks=[1, 1, 1, 1, 1])
    without = _net("anisotropic", n_blocks=[1, 1, 1, 1, 1], deep_supervision=False)
    assert with_ds.state_dict().keys() == without.state_dict().keys()
    without.load_state_dict(with_ds.state_dict(), strict=True)
    x = torch.randn(1, 1, 4, 16, 16)
    with torch.no_grad():
        outputs = with_ds(x)
        assert [tuple(o.shape[2:]) for o in outputs] == [(4, 16, 16), (4, 8, 8), (2, 4, 4), (1, 2, 2)]
        assert without(x).equal(outputs[0])
        with_ds.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled does
        assert with_ds(x).equal(outputs[0])


def test_zero_initialised_blocks():
    net = _net("isotropic", n_blocks=[1, 1, 1, 1, 1])
    net.apply(net.initialize)
    blocks = [m for m in net.modules() if isinstance(m, SteerableResidualBlock)]
    assert len(blocks) == 5 and all(b.norm2.weight.abs().sum() == 0 for b in blocks)


def test_feature_map_size_counts_the_outputs_the_forward_pass_makes():
    """Every output the forward pass makes, counted by hooks: a convolution followed by a norm counts twice
    (the fused norm + gate runs as one node, so it is counted through the convolution), a block's second
    convolution three times (+ the sum), a blur three times per blurred axis, pooling, upsampling, the
    blocks' outputs and the heads once."""
    net = _net("isotropic", n_blocks=[1, 2, 1, 1, 1], antialias=0.5, upsample_antialias=0.5)
    once = (SteerableBlock, SteerableResidualBlock, NormMaxPool3d, GaussianBlur3d, TrilinearUpsample)
    weight = {m: 1 for m in net.modules() if isinstance(m, once)}
    for m in net.modules():
        if isinstance(m, GaussianBlur3d):  # 3 activation-sized values per blurred axis (E3nnUNet's fit)
            weight[m] = 3 * sum(sigma > 0 for sigma in m.sigma)
        elif isinstance(m, SteerableBlock):
            weight[m.conv] = 2
        elif isinstance(m, SteerableResidualBlock):
            weight[m.conv2] = 3
            if m.skip is not None:
                weight[m.skip[0]] = 2
    weight.update({m: 1 for m in [*net.decoder.reduce, *net.decoder.seg_layers]})
    kept = []
    for m, w in weight.items():
        m.register_forward_hook(lambda module, inputs, output, w=w: kept.append(w * output.numel()))
    with torch.no_grad():
        net(torch.zeros(1, 1, 16, 16, 16))
    assert len({type(m) for m in weight}) == 6 and len(kept) > 40, "every kind of output is counted"
    assert net.compute_conv_feature_map_size((16, 16, 16)) == sum(kept)


def test_plans_reader_and_bad_arguments():
    plain = plans_configuration([[1, 1, 1], [2, 2, 2]], None, [8, 16], patch_size=[8, 8, 8], spacing=[1, 1, 1])
    with pytest.raises(ValueError, match=r"lacks \['n_blocks_per_stage'\]"):
        e3nn_resenc_unet_kwargs(plain)
    kwargs = e3nn_resenc_unet_kwargs(resenc_configuration("isotropic"))
    assert kwargs["n_blocks_per_stage"] == [1, 3, 4, 6, 6] and kwargs["patch_size"] == [64, 64, 64]
    with pytest.raises(ValueError, match=r"patch size \[64, 64, 60\] is not divisible"):
        E3nnResEncUNet(1, 2, **{**kwargs, "patch_size": [64, 64, 60]})
    with pytest.raises(ValueError, match="n_blocks_per_stage must have 5 entries"):
        E3nnResEncUNet(1, 2, **{**kwargs, "n_blocks_per_stage": [1, 2]})


@pytest.mark.parametrize("name", trainers.__all__)
def test_every_steerable_trainer_builds_from_resenc_plans(name):
    """Each trainer's spec on the M preset's plans (small widths): an E3nnResEncUNet whose parameter names
    do not depend on deep supervision (nnU-Net builds it without at inference and loads strictly)."""
    trainer = getattr(trainers, name)
    config = with_features(resenc_configuration("anisotropic"), [16, 16, 32, 32, 32])
    torch.manual_seed(0)
    with_ds = trainer.build_network_architecture(None, config, 1, 3, enable_deep_supervision=True)
    without = trainer.build_network_architecture(None, config, 1, 3, enable_deep_supervision=False)
    assert isinstance(with_ds, E3nnResEncUNet) and with_ds.symmetry == trainer.symmetry
    assert with_ds.decoder.deep_supervision and not without.decoder.deep_supervision
    blocks = [sum(isinstance(m, SteerableResidualBlock) for m in stage) for stage in with_ds.encoder.stages]
    assert blocks == [1, 3, 4, 6, 6]
    assert (type(with_ds.encoder.stages[1][0]).__name__ == "GaussianBlur3d") == (trainer.spec.antialias > 0)
    without.load_state_dict(with_ds.state_dict(), strict=True)


@pytest.mark.parametrize("preset", ["M", "L", "XL"])
def test_trainer_network_from_every_preset_predicts_as_it_trained(preset):
    """nnU-Net's cycle: built with deep supervision for training, saved, rebuilt without it, loaded."""
    config = with_features(resenc_configuration("isotropic", preset), [8, 8, 16, 16, 16])
    torch.manual_seed(0)
    trained = trainers.nnUNetTrainerE3nn.build_network_architecture(None, config, 1, 2, True).eval()
    with torch.no_grad():  # the trained blocks are not at their zero init
        for name, p in trained.named_parameters():
            if "norm" in name:
                p.normal_()
    inference = trainers.nnUNetTrainerE3nn.build_network_architecture(None, config, 1, 2, False).eval()
    inference.load_state_dict(trained.state_dict(), strict=True)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert inference(x).equal(trained(x)[0])
