"""MirrorResEncUNet from plans written by nnU-Net's ResEnc M/L/XL planners: exact flip symmetry in float64
at the planned strides and kernels, the mirror trainers' network, deep supervision, the memory count and
the paper's parameter bookkeeping against the stock ResidualEncoderUNet."""
import pytest
import torch
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from resenc_plans import PRESETS, resenc_configuration, with_features
from torch import nn

from nnunet_equivariant.layers import mirror_conv_op, symmetry_axes
from nnunet_equivariant.networks.mirror_unet import MirrorResEncUNet, mirror_unet_from_plans
from nnunet_equivariant.networks.parameter_matching import count_parameters
from nnunet_equivariant.testing import assert_equivariant, axis_flips, equivariance_error, flips_of
from nnunet_equivariant.training import mirror as mirror_trainers

RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
# float64 sizes: divisible by the planned total stride, 2 voxels or more at the bottom
SIZES = {"isotropic": (32, 32, 32), "anisotropic": (8, 32, 32)}


def _randomise_norms(net: nn.Module) -> nn.Module:
    """Random affine norms: the zero-initialised last norm of every block would hide the residual path."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.InstanceNorm3d):
                m.weight.normal_()
                m.bias.normal_()
    return net


@pytest.mark.parametrize("dataset, symmetry", [("isotropic", "f123"), ("anisotropic", "f123"),
                                               ("anisotropic", "f1"), ("anisotropic", "f23")])
def test_network_of_resenc_plans_commutes_with_flips_of_its_axes(dataset, symmetry):
    torch.manual_seed(0)
    configuration = with_features(resenc_configuration(dataset), [2, 4, 4, 6, 6])
    net = mirror_unet_from_plans(configuration, 1, 2, symmetry, deep_supervision=True)
    assert isinstance(net, MirrorResEncUNet)
    assert [len(stage[1].blocks) for stage in net.encoder.stages] == [1, 3, 4, 6, 6], "the planned blocks"
    net = _randomise_norms(net).double()
    x = torch.randn(1, 1, *SIZES[dataset], dtype=torch.float64)
    axes = symmetry_axes(symmetry)
    assert_equivariant(net, x, flips_of(axes), tol=1e-10)  # every deep-supervision output
    for a in set(range(3)) - set(axes):
        with torch.no_grad():
            assert equivariance_error(net, x, axis_flips([a])) > 1e-2, f"free axis {a} is not symmetric"


def test_stock_resenc_with_symmetric_convs_is_refused():
    """nnU-Net's ResidualEncoderUNet strides the first 3x3x3 convolution of every stage: off-centre windows
    on the planned even lengths, so with our symmetric convolutions it refuses to run (why the mirror
    network pools first)."""
    configuration = with_features(resenc_configuration("isotropic"), [2, 4, 4, 6, 6])
    op = mirror_conv_op("f123")
    trap = get_network_from_plans(RESENC, {**configuration.network_arch_init_kwargs,
                                           "conv_op": f"{op.__module__}.{op.__qualname__}"},
                                  configuration.network_arch_init_kwargs_req_import, 1, 2)
    with pytest.raises(ValueError, match="off-centre"):
        trap(torch.randn(1, 1, 32, 32, 32))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_mirror_trainer_builds_from_every_preset_and_deep_supervision_keeps_the_state_dict(preset):
    torch.manual_seed(0)
    configuration = with_features(resenc_configuration("anisotropic", preset), [4, 8, 8, 8, 8])
    trainer = mirror_trainers.nnUNetTrainerMirror
    with_ds = trainer.build_network_architecture(None, configuration, 1, 3, enable_deep_supervision=True)
    without = trainer.build_network_architecture(None, configuration, 1, 3, enable_deep_supervision=False)
    assert isinstance(without, MirrorResEncUNet) and without.symmetry == "f123"
    assert with_ds.state_dict().keys() == without.state_dict().keys()
    without.load_state_dict(with_ds.state_dict(), strict=True)
    x = torch.randn(1, 1, 8, 32, 32)
    with torch.no_grad():
        outputs = with_ds(x)
        assert [tuple(o.shape[2:]) for o in outputs] == [(8, 32, 32), (8, 16, 16), (4, 8, 8), (2, 4, 4)]
        assert torch.equal(without(x), outputs[0])


def test_feature_map_size_counts_what_the_forward_pass_keeps():
    configuration = with_features(resenc_configuration("anisotropic"), [4, 8, 8, 8, 8])
    for ds in (True, False):
        net = mirror_unet_from_plans(configuration, 1, 3, "f123", deep_supervision=ds)
        kept = []

        def keep(module, inputs, output, kept=kept):
            kept.append(output.numel())

        for m in net.modules():
            pooling = isinstance(m, nn.MaxPool3d) and m.kernel_size not in (1, (1, 1, 1), [1, 1, 1])
            if isinstance(m, ConvDropoutNormReLU) or pooling or m in set(net.decoder.transpconvs) | set(
                    net.decoder.seg_layers):
                m.register_forward_hook(keep)
        net(torch.zeros(1, 1, 8, 32, 32))
        assert net.compute_conv_feature_map_size((8, 32, 32)) == sum(kept)


@pytest.mark.parametrize("dataset", ["isotropic", "anisotropic"])
def test_keep_params_matches_the_stock_resenc_network(dataset):
    configuration = resenc_configuration(dataset, "M")
    kwargs = configuration.network_arch_init_kwargs
    stock = count_parameters(lambda: get_network_from_plans(RESENC, kwargs,
                                                            configuration.network_arch_init_kwargs_req_import,
                                                            1, 3, allow_init=False))
    with torch.device("meta"):
        plain = mirror_trainers.nnUNetTrainerMirror.build_network_architecture(None, configuration, 1, 3)
        keep = mirror_trainers.nnUNetTrainerMirrorKeepParams.build_network_architecture(None, configuration, 1, 3)
    n_plain, n_keep = (sum(p.numel() for p in n.parameters()) for n in (plain, keep))
    assert n_plain < stock / 2, "f123 with the plans' widths has far fewer parameters"
    assert abs(n_keep - stock) / stock < 0.01, "keep-params matches the stock parameter count"
    ratios = [w / b for w, b in zip(keep.encoder.output_channels, kwargs["features_per_stage"])]
    assert max(ratios) - min(ratios) < 0.02, "every stage is widened by the same factor (up to rounding)"
    assert keep.encoder.stem.output_channels == keep.encoder.output_channels[0], "the stem follows stage 0"
