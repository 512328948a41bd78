"""MirrorUNet at planner-like topologies, and the mirror trainers' network and test-time mirroring."""

import pytest
import torch
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from nnunet_equivariant.inference.mirroring import non_redundant_mirror_axes
from nnunet_equivariant.layers import SYMMETRIES, mirror_conv_op, symmetry_axes
from nnunet_equivariant.networks.mirror_unet import MirrorUNet, mirror_unet_from_plans
from nnunet_equivariant.networks.parameter_matching import count_parameters
from nnunet_equivariant.symmetry import get_symmetry
from nnunet_equivariant.testing import (assert_equivariant, axis_flips, equivariance_error, flips_of,
                                        plans_configuration)
from nnunet_equivariant.training import mirror as mirror_trainers

PLAIN_CONV_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"

# (configuration, input size): isotropic 2x pooling; anisotropic [1, 2, 2] first pooling with 1x3x3
# kernels; an axis that is never pooled. Sizes are divisible by the total stride, with even and odd
# lengths at the bottom (16 / 8 = 2, 24 / 8 = 3, 12 / 4 = 3) and on the unpooled axis (7).
TOPOLOGIES = {
    "isotropic": (plans_configuration([[1, 1, 1]] + [[2, 2, 2]] * 3, [[3, 3, 3]] * 4, [4, 8, 16, 32]),
                  (16, 8, 24)),
    "anisotropic": (plans_configuration([[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
                                        [[1, 3, 3]] + [[3, 3, 3]] * 3, [4, 8, 16, 32]),
                    (12, 16, 24)),
    "unpooled_axis": (plans_configuration([[1, 1, 1], [1, 2, 2], [1, 2, 2]], [[3, 3, 3]] * 3, [4, 8, 16]),
                      (7, 8, 12)),
}


@pytest.mark.parametrize("topology, symmetry", [
    *(("anisotropic", s) for s in SYMMETRIES[1:]),
    *((t, s) for t in ("isotropic", "unpooled_axis") for s in ("f1", "f23", "f123")),
])
def test_whole_network_commutes_with_flips_of_its_axes(topology, symmetry):
    torch.manual_seed(0)
    configuration, size = TOPOLOGIES[topology]
    net = mirror_unet_from_plans(configuration, 2, 3, symmetry, deep_supervision=True).double()
    axes = symmetry_axes(symmetry)
    x = torch.randn(1, 2, *size, dtype=torch.float64)
    assert_equivariant(net, x, flips_of(axes), tol=1e-10)  # every deep-supervision output
    for a in set(range(3)) - set(axes):
        with torch.no_grad():
            assert equivariance_error(net, x, axis_flips([a])) > 1e-2, \
                f"a flip of free axis {a} changes the output of a random network"


def test_nnunet_strided_conv_downsampling_is_refused():
    """nnU-Net's own encoder downsamples with stride-2 3x3x3 convolutions: on the planner's even lengths
    their windows are off-centre (the known trap), so the same U-Net built from our symmetric convs
    refuses to run instead of silently losing the symmetry."""
    configuration = TOPOLOGIES["isotropic"][0]
    op = mirror_conv_op("f123")
    trap = get_network_from_plans(PLAIN_CONV_UNET, {**configuration.network_arch_init_kwargs,
                                                    "conv_op": f"{op.__module__}.{op.__qualname__}"},
                                  configuration.network_arch_init_kwargs_req_import, 1, 2)
    with pytest.raises(ValueError, match="off-centre"):
        trap(torch.randn(1, 1, 16, 16, 16))


def test_deep_supervision_scales_and_state_dict_without_it():
    torch.manual_seed(0)
    configuration, _ = TOPOLOGIES["anisotropic"]
    with_ds = mirror_unet_from_plans(configuration, 1, 3, "f123", deep_supervision=True)
    without = mirror_unet_from_plans(configuration, 1, 3, "f123", deep_supervision=False)
    assert with_ds.state_dict().keys() == without.state_dict().keys(), "parameter names do not depend on DS"
    without.load_state_dict(with_ds.state_dict())
    x = torch.randn(1, 1, 12, 16, 24)
    outputs = with_ds(x)
    assert [tuple(o.shape[2:]) for o in outputs] == [(12, 16, 24), (12, 8, 12), (6, 4, 6)], \
        "outputs at the plans' scales, largest first"
    assert torch.equal(without(x), outputs[0])
    without.decoder.deep_supervision = True  # what nnU-Net's set_deep_supervision_enabled does
    assert len(without(x)) == 3


def test_feature_map_size_counts_what_the_forward_pass_keeps():
    configuration, _ = TOPOLOGIES["anisotropic"]
    for ds in (True, False):
        net = mirror_unet_from_plans(configuration, 1, 3, "f12", deep_supervision=ds)
        kept = []

        def keep(module, inputs, output, kept=kept):
            kept.append(output.numel())

        counted = (ConvDropoutNormReLU, nn.MaxPool3d)
        for m in net.modules():
            if isinstance(m, counted) or m in set(net.decoder.transpconvs) | set(net.decoder.seg_layers):
                m.register_forward_hook(keep)
        net(torch.zeros(1, 1, 12, 16, 24))
        assert net.compute_conv_feature_map_size((12, 16, 24)) == sum(kept)


def test_bad_input_is_named():
    configuration, _ = TOPOLOGIES["isotropic"]
    net = mirror_unet_from_plans(configuration, 1, 2, "f1")
    with pytest.raises(ValueError, match=r"divisible.*\(8, 8, 8\)"):
        net(torch.zeros(1, 1, 16, 16, 12))
    two_d = plans_configuration([[1, 1], [2, 2]], [[3, 3]] * 2, [4, 8], conv_op="torch.nn.modules.conv.Conv2d")
    with pytest.raises(ValueError, match="3D only"):
        mirror_unet_from_plans(two_d, 1, 2, "f1")
    other = plans_configuration([[1, 1, 1]], [[3, 3, 3]], [4],
                                network="dynamic_network_architectures.architectures.unet.ResidualUNet")
    with pytest.raises(ValueError, match="follow plans for .*ResidualEncoderUNet.* uses .*ResidualUNet"):
        mirror_unet_from_plans(other, 1, 2, "f1")


def test_initialisation_is_he_with_the_fan_of_the_full_kernel():
    torch.manual_seed(0)
    configuration = plans_configuration([[1, 1, 1], [2, 2, 2]], [[3, 3, 3]] * 2, [64, 128])
    net = mirror_unet_from_plans(configuration, 1, 2, "f123")
    conv = net.encoder.stages[1][1].convs[1].conv  # 128 -> 128, 3x3x3
    expected = (2 / (1 + 1e-4)) ** 0.5 / (128 * 27) ** 0.5
    assert abs(conv.weight.std().item() / expected - 1) < 0.05
    assert conv.bias.abs().max() == 0


TRAINERS = {
    "nnUNetTrainerMirror": ("f123", None), "nnUNetTrainerMirrorKeepParams": ("f123", None),
    "nnUNetTrainerMirror_f1": ("f1", (1, 2)), "nnUNetTrainerMirror_f2": ("f2", (0, 2)),
    "nnUNetTrainerMirror_f3": ("f3", (0, 1)), "nnUNetTrainerMirror_f12": ("f12", (2,)),
    "nnUNetTrainerMirror_f13": ("f13", (1,)), "nnUNetTrainerMirror_f23": ("f23", (0,)),
}


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_trainer_network_and_reduced_test_time_mirroring(name):
    """nnU-Net's predictor averaging over the reduced mirror axes equals its full 8-pass mirroring."""
    torch.manual_seed(0)
    trainer = getattr(mirror_trainers, name)
    symmetry, reduced_axes = TRAINERS[name]
    assert trainer.symmetry == symmetry
    assert non_redundant_mirror_axes((0, 1, 2), get_symmetry(trainer.symmetry).flip_generators) == reduced_axes
    configuration, size = TOPOLOGIES["anisotropic"]
    net = trainer.build_network_architecture(None, configuration, 1, 3, enable_deep_supervision=False)
    assert isinstance(net, MirrorUNet) and net.symmetry == symmetry and not net.decoder.deep_supervision
    net = net.double().eval()
    predictor = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=True)
    predictor.network = net
    x = torch.randn(1, 1, *size, dtype=torch.float64)
    with torch.no_grad():
        predictor.allowed_mirroring_axes = (0, 1, 2)
        full = predictor._internal_maybe_mirror_and_predict(x)
        predictor.allowed_mirroring_axes = reduced_axes
        reduced = predictor._internal_maybe_mirror_and_predict(x)
    torch.testing.assert_close(reduced, full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("strides, kernel_sizes, fewer", [
    ([[1, 1, 1]] + [[2, 2, 2]] * 5, [[3, 3, 3]] * 6, 3.5),  # nnU-Net's default plans, e.g. a 128^3 patch
    # 1x3x3 kernels: no free half along the first axis, so fewer savings
    ([[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]], [[1, 3, 3]] * 2 + [[3, 3, 3]] * 4, 3.4),
])
def test_keep_params_matches_the_stock_network_within_1_percent(strides, kernel_sizes, fewer):
    configuration = plans_configuration(strides, kernel_sizes, [32, 64, 128, 256, 320, 320])
    kwargs = configuration.network_arch_init_kwargs
    stock = count_parameters(lambda: get_network_from_plans(PLAIN_CONV_UNET, kwargs,
                                                            configuration.network_arch_init_kwargs_req_import,
                                                            1, 3, allow_init=False))
    with torch.device("meta"):
        keep_arch = mirror_trainers.nnUNetTrainerMirror.build_network_architecture(None, configuration, 1, 3)
        keep_params = mirror_trainers.nnUNetTrainerMirrorKeepParams.build_network_architecture(
            None, configuration, 1, 3)
    n_arch = sum(p.numel() for p in keep_arch.parameters())
    n_params = sum(p.numel() for p in keep_params.parameters())
    assert round(stock / n_arch, 1) == fewer, \
        f"README: f123 with the plans' widths has {fewer}x fewer parameters ({stock / n_arch:.3f}x)"
    assert abs(n_params - stock) / stock < 0.01, "keep-params matches the stock parameter count"
    ratios = [w / b for w, b in zip(keep_params.encoder.output_channels, kwargs["features_per_stage"])]
    assert max(ratios) - min(ratios) < 0.02, "every stage is widened by the same factor (up to rounding)"
