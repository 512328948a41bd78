"""E3nnUNet: whole-network equivariance at planner-like strides and sizes, nnU-Net's network protocol,
non-redundant test-time mirroring, and the trainers' network construction from plans."""
import json

import pytest
import torch
from e3nn import o3

from nnunet_equivariant.inference.mirroring import non_redundant_mirror_axes
from nnunet_equivariant.networks import E3nnSpec, E3nnUNet
from nnunet_equivariant.networks.e3nn_spec import irreps_for_width
from nnunet_equivariant.symmetry import get_symmetry
from nnunet_equivariant.testing import assert_equivariant, grid_rotations, grid_symmetries, plans_configuration
from nnunet_equivariant.training import e3nn as trainers
from nnunet_equivariant.training.offgrid_trainers import nnUNetTrainerE3nnCompact

ISO_STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
SMALL = ["1x0e + 1x1e + 1x2e", "2x0e + 1x1e + 1x2e", "2x0e + 2x1e + 1x2e"]  # tiny widths keep float64 fast
SMALL_DIMS = [o3.Irreps(f).dim for f in SMALL]


def _net(symmetry="so3", strides=ISO_STRIDES, spacing=(1.0, 1.0, 1.0), features=None, deep_supervision=True,
         patch_size=None, **kw):
    """A small E3nnUNet with random affine norm parameters; ``kw``: fields of its ``E3nnSpec``."""
    if features is None:
        features = SMALL if symmetry == "so3" else [f.replace("1e", "1o") for f in SMALL]
    net = E3nnUNet(input_channels=2, num_classes=3, n_stages=len(strides), features_per_stage=features,
                   strides=strides, n_conv_per_stage=2, n_conv_per_stage_decoder=1, deep_supervision=deep_supervision,
                   spacing=spacing, patch_size=patch_size, spec=E3nnSpec(symmetry=symmetry, **kw))
    net.apply(net.initialize)  # as nnU-Net does
    return _randomise_norms(net).eval()


def _randomise_norms(net):
    """Random affine norm parameters, so equivariance is not helped by the identity init."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".norm." in name:
                p.normal_()
    return net


def test_so3_unet_is_equivariant_on_all_24_rotations(float64_default):
    net = _net()
    x = torch.randn(1, 2, 16, 16, 16)
    assert_equivariant(net, x, grid_rotations(), rep_in=None, rep_out=None, tol=1e-10)


def test_antialiased_paper_basis_unet_is_equivariant_on_all_24_rotations(float64_default):
    """The other options: Gaussian blur before pooling and after upsampling, and the paper's kernel basis."""
    net = _net(antialias=0.5, upsample_antialias=0.5, radial_basis="smooth_finite")
    blurs = [m for m in net.modules() if type(m).__name__ == "GaussianBlur3d"]
    assert len(blurs) == 4 and blurs[0].sigma == (1.0, 1.0, 1.0), "2 poolings and 2 upsamplings, sigma 0.5 x 2"
    convs = [m for m in net.modules() if type(m).__name__ == "SteerableConv3d" and m.kernel_size > 1]
    assert convs and all(m.radial_basis == "smooth_finite" for m in convs), "(1x1 convolutions have no radial part)"
    x = torch.randn(1, 2, 16, 16, 16)
    assert_equivariant(net, x, grid_rotations(), rep_in=None, rep_out=None, tol=1e-10)
    plain = _net()
    extra = net.compute_conv_feature_map_size((16, 16, 16)) - plain.compute_conv_feature_map_size((16, 16, 16))
    # 3 activation-sized values per blurred axis (the count fit to measured peaks, _blur_passes), at the
    # pooling's input / the upsampling's output size
    assert extra == 9 * 2 * (SMALL_DIMS[0] * 16 ** 3 + SMALL_DIMS[1] * 8 ** 3)


def test_half_voxel_shells_silu_unet_is_equivariant_on_all_24_rotations(float64_default):
    """The off-grid levers of docs/offgrid_real_anatomy.md: shells at every half voxel and a SiLU gate."""
    net = _net(radial_basis="gaussian_shells_half", scalar_activation="silu")
    convs = [m for m in net.modules() if type(m).__name__ == "SteerableConv3d" and m.kernel_size > 1]
    assert convs and all(m.radial_basis == "gaussian_shells_half" for m in convs)
    x = torch.randn(1, 2, 16, 16, 16)
    assert_equivariant(net, x, grid_rotations(), rep_in=None, rep_out=None, tol=1e-10)


def test_mean_pooling_unet_is_equivariant_on_all_48_symmetries_and_counts_as_the_norm_max(float64_default):
    """``pooling="mean"`` (MeanPool3d at every pooling, after the anti-aliasing blur here): exact on the
    48 symmetries; its memory count is the norm max's (the pooled output; both keep their input for
    backward, the norm max its int64 indices too, the mean none)."""
    net = _net("o3", pooling="mean", antialias=0.5)
    pools = [m for m in net.modules() if type(m).__name__ in ("MeanPool3d", "NormMaxPool3d")]
    assert len(pools) == 2 and all(type(m).__name__ == "MeanPool3d" for m in pools)
    x = torch.randn(1, 2, 8, 8, 8)
    assert_equivariant(net, x, grid_symmetries(), tol=1e-10)
    same = _net("o3", antialias=0.5)
    assert net.compute_conv_feature_map_size((16, 16, 16)) == same.compute_conv_feature_map_size((16, 16, 16))


def test_invariant_head_unet_is_equivariant_on_all_48_symmetries_and_counts_its_invariants(float64_default):
    """``head="invariants"``: every head (deep supervision included) is an ``InvariantHead``; exact on the
    48 symmetries; the memory count adds each head's invariants at its resolution."""
    net = _net("o3", head="invariants")
    heads = list(net.decoder.seg_layers)
    assert len(heads) == 2 and all(type(h).__name__ == "InvariantHead" for h in heads)
    assert [h.n_invariants for h in heads] == [4, 3], "2x0e+1x1o+1x2e, 1x0e+1x1o+1x2e: the scalars, a norm per copy"
    x = torch.randn(1, 2, 8, 8, 8)
    assert_equivariant(net, x, grid_symmetries(), tol=1e-10)
    plain = _net("o3")
    extra = net.compute_conv_feature_map_size((16, 16, 16)) - plain.compute_conv_feature_map_size((16, 16, 16))
    assert extra == 4 * 8 ** 3 + 3 * 16 ** 3


def test_compact_trainer_network_is_equivariant_on_all_24_rotations(float64_default):
    """``nnUNetTrainerE3nnCompact``'s recipe (3^3 kernels, 12:3:1 irreps, invariant heads) as its trainer
    builds it from plans: exact on the 24 rotations, with random affine norm parameters."""
    config = _configuration([16, 16, 16], [1.0, 1.0, 1.0], ISO_STRIDES, [32, 64, 64])
    net = nnUNetTrainerE3nnCompact.build_network_architecture(None, config, 1, 3, enable_deep_supervision=True)
    assert str(net.encoder.output_irreps[0]) == "12x0e+3x1e+1x2e"
    assert_equivariant(_randomise_norms(net).double().eval(), torch.randn(1, 1, 16, 16, 16), grid_rotations(), rep_in=None,
                       rep_out=None, tol=1e-10)


def test_default_recipe_with_o3_is_equivariant_on_all_48_symmetries(float64_default):
    """``nnUNetTrainerE3nn.spec.with_symmetry("o3")`` (the default's recipe with vectors, ``1o``) as a subclass
    of the default trainer builds it from plans: exact on the 24 rotations and the 24 rotoreflections."""
    class O3Default(nnUNetTrainerE3nnCompact):
        spec = nnUNetTrainerE3nnCompact.spec.with_symmetry("o3")

    config = _configuration([16, 16, 16], [1.0, 1.0, 1.0], ISO_STRIDES, [32, 64, 64])
    net = O3Default.build_network_architecture(None, config, 1, 3, enable_deep_supervision=True)
    assert str(net.encoder.output_irreps[0]) == "12x0e+3x1o+1x2e" and O3Default.symmetry == "o3"
    assert_equivariant(_randomise_norms(net).double().eval(), torch.randn(1, 1, 16, 16, 16), grid_symmetries(),
                       rep_in=None, rep_out=None, tol=1e-10)


def test_invariant_head_unet_exports_exactly():
    """``export``'s float64 checks on a network with invariant heads: the assembled network and the traced
    program give the trained network's logits (the norms trace like any other op)."""
    from nnunet_equivariant.inference.export import _float64_errors

    torch.manual_seed(0)
    net = _net(head="invariants", deep_supervision=False)
    assembly, program = _float64_errors(net, torch.randn(2, 2, 8, 8, 8))
    assert assembly < 1e-12 and program < 1e-12


def test_o3_unet_is_equivariant_on_all_48_symmetries(float64_default):
    net = _net("o3")
    assert "1x1o" in str(net.encoder.output_irreps[0])
    x = torch.randn(1, 2, 8, 8, 8)
    assert_equivariant(net, x, grid_symmetries(), tol=1e-10)


def test_anisotropic_unet_is_equivariant_to_the_symmetries_of_its_grid(float64_default):
    """Spacing (3, 1, 1) mm and strides [1,2,2] then [2,2,2]: the grid keeps x; y and z may be swapped."""
    net = _net(strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], spacing=(3.0, 1.0, 1.0))
    convs = [m for m in net.modules() if type(m).__name__ == "SteerableConv3d" and m.kernel_size == 5]
    assert convs[0].kernel_shape == (1, 5, 5) and net.encoder.stage_spacing[1] == (3.0, 2.0, 2.0)
    assert {m.kernel_shape for m in convs} == {(1, 5, 5), (3, 5, 5)}, "kernels are balls in mm at each stage"
    grid = [R for R in grid_symmetries() if abs(R[0, 0]) == 1]
    assert len(grid) == 16
    x = torch.randn(1, 2, 4, 8, 8)
    assert_equivariant(net, x, [R for R in grid if torch.det(R) > 0], tol=1e-10)


def test_unet_without_equivariant_pooling_sizes_is_rejected():
    net = _net()
    with pytest.raises(ValueError, match=r"input size \[16, 16, 14\] is not divisible .* \[4, 4, 4\]"):
        net(torch.randn(1, 2, 16, 16, 14))


def test_deep_supervision_outputs_and_state_dict_without_deep_supervision():
    torch.manual_seed(0)
    net = _net(strides=[[1, 1, 1], [2, 2, 2], [1, 2, 2], [2, 2, 2]], features=SMALL + [SMALL[-1]])
    x = torch.randn(2, 2, 16, 16, 16)
    with torch.no_grad():
        outputs = net(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 16, 16, 16), (2, 3, 8, 8, 8), (2, 3, 8, 4, 4)], \
        "one output per decoder stage at the plans' scales, highest resolution first"
    plain = _net(strides=[[1, 1, 1], [2, 2, 2], [1, 2, 2], [2, 2, 2]], features=SMALL + [SMALL[-1]],
                 deep_supervision=False)
    plain.load_state_dict(net.state_dict(), strict=True)
    with torch.no_grad():
        assert plain(x).equal(outputs[0]), "the same weights give the same full-resolution output"
    net.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled does
    with torch.no_grad():
        assert net(x).equal(outputs[0])


@pytest.mark.parametrize("symmetry, expected", [("so3", (0,)), ("o3", None)])
def test_non_redundant_mirroring_equals_full_mirroring(float64_default, symmetry, expected):
    """nnU-Net's predictor logic with the reduced axes gives the 8-pass average up to float error."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    net = _net(symmetry, deep_supervision=False)
    flips = get_symmetry(symmetry).flip_generators
    axes = non_redundant_mirror_axes((0, 1, 2), flips)
    assert axes == expected
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.network, predictor.use_mirroring = net, True
    x = torch.randn(1, 2, 8, 8, 8)
    predictor.allowed_mirroring_axes = (0, 1, 2)
    full = predictor._internal_maybe_mirror_and_predict(x)
    predictor.allowed_mirroring_axes = axes
    reduced = predictor._internal_maybe_mirror_and_predict(x)
    assert torch.allclose(reduced, full, rtol=0, atol=1e-12)


def test_irreps_per_stage_follow_the_ratio_closest_to_the_width():
    assert irreps_for_width(32, "8x0e+4x1e+2x2e") == o3.Irreps("8x0e+4x1e+2x2e")
    assert irreps_for_width(64, "8x0e+4x1e+2x2e") == o3.Irreps("16x0e+8x1e+4x2e")
    assert irreps_for_width(256, "8x0e+4x1e+2x2e") == o3.Irreps("72x0e+36x1e+18x2e"), "9 units (270) is closer to 256 than 8 (240)"
    assert irreps_for_width(8, "8x0e+4x1e+2x2e") == o3.Irreps("8x0e+4x1e+2x2e"), "at least one unit"
    assert irreps_for_width(256, "30x0e") == o3.Irreps("270x0e")
    assert irreps_for_width(28, "4x1e + 2x0e") == o3.Irreps("4x0e+8x1e"), "scalars first (the gate's layout)"
    with pytest.raises(ValueError, match="irreps_ratio: invalid irreps"):
        irreps_for_width(32, "8x0e+4x1x")


def test_compute_conv_feature_map_size_scales_with_the_patch():
    net = _net()
    small, large = net.compute_conv_feature_map_size((16, 16, 16)), net.compute_conv_feature_map_size((32, 32, 32))
    assert small > 16 ** 3 * 9 * 2 and large == 8 * small


def test_network_builds_from_json_kwargs_like_a_plans_file():
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    kwargs = json.loads(json.dumps(dict(n_stages=3, features_per_stage=[8, 16, 32], strides=ISO_STRIDES,
                                        n_conv_per_stage=[1, 1, 1], n_conv_per_stage_decoder=[1, 1],
                                        spacing=[1.0, 1.0, 1.0],
                                        spec=E3nnSpec(kernel_size=3, symmetry="o3").to_dict())))
    net = get_network_from_plans("nnunet_equivariant.networks.e3nn_unet.E3nnUNet", kwargs, [], 1, 2,
                                 deep_supervision=False)
    assert isinstance(net, E3nnUNet) and net(torch.randn(1, 1, 8, 8, 8)).shape == (1, 2, 8, 8, 8)
    assert net.spec == E3nnSpec(kernel_size=3, symmetry="o3"), "the spec round-trips through JSON"


@pytest.mark.parametrize("kwargs, match", [
    (dict(strides=[[1, 1], [2, 2], [2, 2]]), "E3nnUNet is 3D only"),
    (dict(patch_size=[18, 16, 16]), r"patch size \[18, 16, 16\] is not divisible by the product of the strides "
                                    r"\[4, 4, 4\]"),
    (dict(symmetry="se3"), "symmetry must be one of"),
    (dict(kernel_size=4), r"kernel_size must be an odd positive integer .* got 4"),
    (dict(radial_basis="bessel"), "radial_basis must be one of"),
    (dict(scalar_activation="gelu"), "scalar_activation must be one of"),
    (dict(antialias=-1.0), "antialias must be a number >= 0"),
    (dict(irreps_ratio="8x0e+4x1o"), "holds odd irreps: symmetry 'so3' takes even irreps only"),
    (dict(irreps_ratio="8x0e+4x3e"), "holds irreps above lmax=2"),
    (dict(features=["1x0e + 1x1e", "2x0e + 2x1q", "3x0e"]), "features_per_stage: invalid irreps"),
    (dict(features=[8, 16]), "features_per_stage must have 3 entries"),
])
def test_unet_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _net(**kwargs)


def _configuration(patch_size, spacing, strides, features):
    return plans_configuration(strides, None, features, patch_size=patch_size, spacing=spacing)


@pytest.mark.parametrize("trainer, ratio_dim, kernel", [
    (trainers.nnUNetTrainerE3nn, 26, (3, 3, 3)), (trainers.nnUNetTrainerE3nnNoRot, 26, (3, 3, 3)),
    (trainers.nnUNetTrainerE3nnO3, 30, (5, 5, 5)),
    (trainers.nnUNetTrainerE3nnRotDA, 30, (5, 5, 5)), (trainers.nnUNetTrainerE3nn_30x0e, 30, (5, 5, 5)),
    (trainers.nnUNetTrainerE3nn_8x8x0, 32, (5, 5, 5)), (trainers.nnUNetTrainerE3nn_4x4x4, 36, (5, 5, 5)),
    (trainers.nnUNetTrainerE3nn_k3, 30, (3, 3, 3)), (trainers.nnUNetTrainerE3nnShells, 30, (5, 5, 5)),
    (trainers.nnUNetTrainerE3nnAntialias, 30, (5, 5, 5)), (trainers.nnUNetTrainerE3nnLean, 15, (5, 5, 5)),
    (trainers.nnUNetTrainerE3nnPaperBasis, 30, (5, 5, 5)), (trainers.nnUNetTrainerE3nnMeanPool, 30, (5, 5, 5)),
    (trainers.nnUNetTrainerE3nnInvariantHead, 30, (5, 5, 5)), (nnUNetTrainerE3nnCompact, 26, (3, 3, 3)),
])
def test_trainers_build_the_network_from_default_plans(trainer, ratio_dim, kernel):
    config = _configuration([32, 32, 32], [1.0, 1.0, 1.0], ISO_STRIDES + [[2, 2, 2]], [32, 64, 128, 256])
    net = trainer.build_network_architecture(None, config, 1, 3, enable_deep_supervision=True)
    assert net.symmetry == trainer.symmetry and net.decoder.deep_supervision
    assert [irreps.dim for irreps in net.encoder.output_irreps][0] == ratio_dim
    assert net.encoder.stages[0][0].conv.kernel_shape == kernel
    assert net.spec == trainer.spec
    assert net.encoder.stages[0][0].conv.radial_basis == trainer.spec.radial_basis
    assert (type(net.encoder.stages[1][0]).__name__ == "GaussianBlur3d") == (trainer.spec.antialias > 0)
    pools = {type(m).__name__ for m in net.modules() if type(m).__name__ in ("NormMaxPool3d", "MeanPool3d")}
    assert pools == {"MeanPool3d" if trainer.spec.pooling == "mean" else "NormMaxPool3d"}
    heads = {type(h).__name__ for h in net.decoder.seg_layers}
    assert heads == {"InvariantHead" if trainer.spec.head == "invariants" else "SteerableConv3d"}
    no_ds = trainer.build_network_architecture(None, config, 1, 3, enable_deep_supervision=False)
    assert set(no_ds.state_dict()) == set(net.state_dict()), "parameter names do not depend on deep supervision"


@pytest.mark.parametrize("trainer, low, high", [(trainers.nnUNetTrainerE3nn, 23, 27),
                                                 (trainers.nnUNetTrainerE3nnShells, 26, 30),
                                                 (trainers.nnUNetTrainerE3nnPaperBasis, 15, 18),
                                                 (trainers.nnUNetTrainerE3nnLean, 100, 120)])
def test_parameters_fewer_than_stock_on_default_plans(trainer, low, high):
    """README's claim: on nnU-Net's default 5-stage plans (32..320 features, 3^3 kernels) the default
    steerable network has ~25x fewer parameters than the stock PlainConvUNet built from the same plans, the
    paper's network ~28x with band-limited shells, ~16x with the paper's basis (more radial elements per
    path), ~110x lean."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    config = _configuration([64, 64, 64], [1.0, 1.0, 1.0], ISO_STRIDES + [[2, 2, 2]] * 2, [32, 64, 128, 256, 320])
    steerable = trainer.build_network_architecture(None, config, 1, 3, True)
    stock = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                   config.network_arch_init_kwargs_req_import, 1, 3, allow_init=False,
                                   deep_supervision=True)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert low < count(stock) / count(steerable) < high


def test_lean_trainer_halves_every_stage_and_stays_equivariant(float64_default):
    """nnUNetTrainerE3nnLean: the plans' widths x 0.5 in units of 4x0e+2x1e+1x2e (dim 15): exactly half the
    irreps of the paper's network (nnUNetTrainerE3nnShells) at every stage, so a quarter of its convolution
    multiply-adds, and still equivariant on the 24 grid rotations."""
    config = _configuration([16, 16, 16], [1.0, 1.0, 1.0], ISO_STRIDES + [[2, 2, 2]], [32, 64, 128, 256])
    torch.manual_seed(0)
    lean = trainers.nnUNetTrainerE3nnLean.build_network_architecture(None, config, 1, 3, False).eval()
    full = trainers.nnUNetTrainerE3nnShells.build_network_architecture(None, config, 1, 3, False)
    assert [ir.dim for ir in lean.encoder.output_irreps] == [ir.dim // 2 for ir in full.encoder.output_irreps] \
        == [15, 30, 60, 135]
    assert str(lean.encoder.output_irreps[0]) == "4x0e+2x1e+1x2e"
    assert_equivariant(lean, torch.randn(1, 1, 16, 16, 16), grid_rotations(), rep_in=None, rep_out=None, tol=1e-10)


def test_multiply_adds_against_stock_as_documented():
    """README / docs/benchmarks_e3nn.md: on nnU-Net's default 4-stage plans (32..256 features) the paper's
    network (5^3) has 4.83x stock nnU-Net's convolution multiply-adds, the lean one 1.21x ("about stock's"), a
    quarter of the paper's network's, the default (3^3, 12:3:1) 0.82x. Counted by torch's FlopCounterMode on one eval forward; every stage's
    cost scales with the patch's voxels, so the ratios at 16^3 are those of the docs' 48^3."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from torch.utils.flop_counter import FlopCounterMode

    from nnunet_equivariant.layers._fft_conv import conv_algorithm

    config = _configuration([16, 16, 16], [1.0, 1.0, 1.0], ISO_STRIDES + [[2, 2, 2]], [32, 64, 128, 256])
    stock = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                   config.network_arch_init_kwargs_req_import, 1, 3, allow_init=False,
                                   deep_supervision=False)
    full = trainers.nnUNetTrainerE3nnShells.build_network_architecture(None, config, 1, 3, False)
    lean = trainers.nnUNetTrainerE3nnLean.build_network_architecture(None, config, 1, 3, False)
    default = trainers.nnUNetTrainerE3nn.build_network_architecture(None, config, 1, 3, False)
    x = torch.zeros(1, 1, 16, 16, 16)

    def flops(net):
        with torch.no_grad(), conv_algorithm("direct"):  # F.conv3d, the default, which the counter sees
            net.eval()(x)  # the first eval forward assembles and caches the kernels
            with FlopCounterMode(display=False) as counter:
                net(x)
        return counter.get_total_flops()

    stock_flops, full_flops, lean_flops = flops(stock), flops(full), flops(lean)
    assert round(full_flops / stock_flops, 2) == 4.83, f"full: {full_flops / stock_flops:.4f}x stock"
    assert round(flops(default) / stock_flops, 2) == 0.82, f"default: {flops(default) / stock_flops:.4f}x stock"
    assert round(lean_flops / stock_flops, 2) == 1.21, f"lean: {lean_flops / stock_flops:.4f}x stock"
    assert abs(lean_flops / full_flops - 0.25) < 0.005, f"lean: {lean_flops / full_flops:.4f} of the full network"


def test_width_scale_is_checked():
    for bad in (0, -0.5, "half", True, float("nan")):
        with pytest.raises(ValueError, match="width_scale must be a positive number"):
            E3nnSpec(width_scale=bad)
    with pytest.raises(ValueError, match="width_scale 0.5 needs integer feature widths"):
        E3nnSpec(width_scale=0.5).stage_irreps("8x0e+4x1e")


def test_default_kernel_basis_is_the_shells():
    """docs/offgrid.md: the shells became the default after the trained off-grid benchmark."""
    config = _configuration([16, 16, 16], [1.0, 1.0, 1.0], ISO_STRIDES, [32, 64, 128])
    for trainer, basis in ((trainers.nnUNetTrainerE3nn, "gaussian_shells"),
                           (trainers.nnUNetTrainerE3nnShells, "gaussian_shells"),
                           (trainers.nnUNetTrainerE3nnPaperBasis, "smooth_finite")):
        net = trainer.build_network_architecture(None, config, 1, 3, False)
        assert {m.radial_basis for m in net.modules() if type(m).__name__ == "SteerableConv3d" and m.kernel_size > 1} \
            == {basis}
    assert E3nnUNet(1, 2, 2, [8, 16], [1, 2], 1, 1).encoder.stages[0][0].conv.radial_basis == "gaussian_shells"


def test_trainer_attributes():
    assert trainers.nnUNetTrainerE3nn.rotation_range_deg == 45 and trainers.nnUNetTrainerE3nn.rotation_probability == 0.5
    assert trainers.nnUNetTrainerE3nnNoRot.rotation_range_deg == 0 == trainers.nnUNetTrainerE3nnShells.rotation_range_deg
    assert trainers.nnUNetTrainerE3nnRotDA.rotation_range_deg is None
    assert trainers.nnUNetTrainerE3nn_30x0e.spec.irreps_ratio == "30x0e"
    for name in trainers.__all__[1:]:
        assert "__" not in name and getattr(trainers, name).__module__ == "nnunet_equivariant.training.e3nn"


@pytest.mark.parametrize("trainer, taps", [(trainers.nnUNetTrainerE3nn, 3), (trainers.nnUNetTrainerE3nnShells, 5)])
def test_trainer_network_on_anisotropic_default_plans(trainer, taps):
    """nnU-Net's default plans for anisotropic data: in-plane pooling first, 3D kernels thin along z."""
    config = _configuration([16, 64, 64], [3.0, 0.8, 0.8], [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2]],
                            [32, 64, 128, 256])
    net = trainer.build_network_architecture(None, config, 1, 2, enable_deep_supervision=False)
    assert net.encoder.stages[0][0].conv.kernel_shape == (1, taps, taps)
    assert net.encoder.stage_spacing[2] == (3.0, 3.2, 3.2)
    assert net.encoder.stages[2][1].conv.kernel_shape == (taps,) * 3, "isotropic again after two in-plane poolings"


def test_weights_of_another_recipe_fail_with_the_way_back():
    """Weights of the paper's network (``nnUNetTrainerE3nn``'s until version 0.2) do not fit the default
    network: the error says so and names the trainer that loads them; the network's own weights load."""
    config = _configuration([16, 16, 16], [1.0, 1.0, 1.0], ISO_STRIDES, [32, 64, 128])
    paper = trainers.nnUNetTrainerE3nnShells.build_network_architecture(None, config, 1, 3, False)
    default = trainers.nnUNetTrainerE3nn.build_network_architecture(None, config, 1, 3, False)
    with pytest.raises(RuntimeError, match=r"(?s)size mismatch.*do not fit E3nnUNet of E3nnSpec\(irreps_ratio="
                                           r"'12x0e\+3x1e\+1x2e'.*set their checkpoints' trainer_name to "
                                           r"nnUNetTrainerE3nnShells"):
        default.load_state_dict(paper.state_dict())
    assert paper.load_state_dict(trainers.nnUNetTrainerE3nnShells.build_network_architecture(
        None, config, 1, 3, False).state_dict()).missing_keys == []


def test_trainer_rejects_2d_and_non_divisible_plans():
    with pytest.raises(ValueError, match=r"nnUNetTrainerE3nn is a 3D trainer: this configuration is 2D"):
        trainers.e3nn_unet_kwargs(_configuration([64, 64], [1.0, 1.0], [[1, 1], [2, 2]], [32, 64]),
                                  "nnUNetTrainerE3nn")
    config = _configuration([24, 24, 20], [1.0, 1.0, 1.0], ISO_STRIDES + [[2, 2, 2]], [32, 64, 128, 256])
    with pytest.raises(ValueError, match=r"patch size \[24, 24, 20\] is not divisible .* \[8, 8, 8\]"):
        trainers.nnUNetTrainerE3nn.build_network_architecture(None, config, 1, 2)


@pytest.mark.parametrize("trainer", [trainers.nnUNetTrainerE3nn, trainers.nnUNetTrainerE3nnO3])
def test_trainer_network_converted_with_double_is_float64_exact(trainer):
    """Built in float32 by the trainer (as nnU-Net does), used in eval (kernels cached), then ``.double()``:
    the bases are re-derived in float64, not upcast from float32, so equivariance holds to float64
    precision (a rounded basis gives ~2e-8), and ``.float()`` gives back the float32 network."""
    config = _configuration([8, 8, 8], [1.0, 1.0, 1.0], ISO_STRIDES, [32, 32, 32])
    torch.manual_seed(0)
    net = trainer.build_network_architecture(None, config, 1, 3, enable_deep_supervision=False).eval()
    fresh32 = {k: v.clone() for k, v in net.named_buffers()}
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        net(x)  # fills the eval kernel caches with float32 kernels
    net.double()
    conv = net.encoder.stages[0][0].conv
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:  # the same layer built in float64
        reference = type(conv)(conv.irreps_in, conv.irreps_out, conv.kernel_size, conv.spacing,
                               conv.num_radial_basis, conv.lmax, conv.self_connection, conv.parity)
    finally:
        torch.set_default_dtype(previous)
    for name in conv.constant_buffers:
        assert getattr(conv, name).equal(getattr(reference, name)), f"{name} is the float64 basis after .double()"
    assert any(ir.l == 2 for _, ir in net.encoder.output_irreps[0]), "l = 2 features: not signed permutations, rounding shows"
    elements = get_symmetry(trainer.symmetry).grid_elements()
    generators = [next(R for R in elements if torch.trace(R) == 1 and R[a, a] == 1) for a in (0, 1)]  # 90 deg
    generators += [R for R in elements if torch.det(R) < 0][:1]  # and a reflection for O(3)
    assert_equivariant(net, x.double(), generators, tol=1e-12)
    net.float()
    for name, buffer in net.named_buffers():
        assert buffer.equal(fresh32[name]), f"{name}: .float() after .double() gives the float32 network back"
