"""Symmetry-aware rotation TTA: the reduced set of passes gives the full rotation x mirroring average
(float64), for stock, mirror-symmetric and steerable networks, through nnU-Net's per-patch hook."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_equivariant.inference.mirroring import non_redundant_mirror_axes
from nnunet_equivariant.inference.rotation_tta import (RotationTTAPredictor, shape_preserving_rotations,
                                                       symmetric_gaussian, symmetric_steps, trainer_symmetry,
                                                       tta_group, tta_passes)
from nnunet_equivariant.networks import E3nnSpec, E3nnUNet
from nnunet_equivariant.networks.mirror_unet import MirrorUNet
from nnunet_equivariant.symmetry import get_symmetry, grid_rotations, grid_symmetries
from nnunet_equivariant.symmetry import transform_volume


class _Counting(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def _plain(symmetry=None):
    kwargs = dict(input_channels=1, n_stages=3, features_per_stage=[4, 8, 8], conv_op=nn.Conv3d,
                  kernel_sizes=3, strides=[1, 2, 2], n_conv_per_stage=1, num_classes=3, n_conv_per_stage_decoder=1,
                  conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True, "eps": 1e-5},
                  nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=False)
    if symmetry is None:
        return PlainConvUNet(**kwargs)
    return MirrorUNet(symmetry=symmetry, **kwargs)


def _e3nn(symmetry):
    odd = symmetry == "o3"
    features = [f.replace("1e", "1o") if odd else f for f in ("1x0e + 1x1e + 1x2e", "2x0e + 1x1e + 1x2e")]
    return E3nnUNet(input_channels=1, num_classes=3, n_stages=2, features_per_stage=features, strides=[[1, 1, 1],
                    [2, 2, 2]], n_conv_per_stage=1, n_conv_per_stage_decoder=1, deep_supervision=False,
                    spacing=(1.0, 1.0, 1.0), spec=E3nnSpec(symmetry=symmetry, kernel_size=3))


def _predictor(net, symmetry, patch_size, spacing=(1.0, 1.0, 1.0), use_mirroring=True):
    """A predictor set up as ``initialize_from_trained_model_folder`` leaves it (network, configuration,
    the checkpoint's reduced mirroring axes)."""
    predictor = RotationTTAPredictor(rotation_tta="grid", symmetry=symmetry, use_mirroring=use_mirroring,
                                     device=torch.device("cpu"), allow_tqdm=False)
    predictor.network = _Counting(net.double().eval())
    predictor.configuration_manager = SimpleNamespace(patch_size=list(patch_size), spacing=list(spacing))
    predictor.allowed_mirroring_axes = non_redundant_mirror_axes((0, 1, 2), get_symmetry(symmetry).flip_generators)
    return predictor


def _full_average(net, x, elements):
    with torch.no_grad():
        return torch.stack([transform_volume(net(transform_volume(x, R)), R.T) for R in elements]).mean(0)


@pytest.mark.parametrize("symmetry, passes", [("none", 48), ("f123", 6), ("f1", 24), ("so3", 2), ("o3", 1)])
def test_reduced_passes_equal_the_full_rotation_and_mirroring_average(symmetry, passes, float64_default):
    net = _plain(None if symmetry == "none" else symmetry) if get_symmetry(symmetry).family != "steerable" \
        else _e3nn(symmetry)
    with torch.no_grad():  # random affine norms, so the symmetry is not helped by the identity initialisation
        for name, p in net.named_parameters():
            if "norm" in name:
                p.normal_()
    predictor = _predictor(net, symmetry, (8, 8, 8))
    x = torch.randn(1, 1, 8, 8, 8)
    reduced = predictor._internal_maybe_mirror_and_predict(x)
    assert predictor.network.calls == passes, f"{symmetry}: {passes} network passes"
    full = _full_average(net, x, grid_symmetries())  # the 24 rotations x the 8 axis flips
    assert torch.allclose(reduced, full, rtol=0, atol=1e-12 * full.abs().max().item()), \
        f"{symmetry}: {passes} passes give the 48-element average (max diff {(reduced - full).abs().max():.2g})"
    for R in grid_rotations()[1:4]:  # the average is invariant: rotating the patch rotates the prediction
        rotated = predictor._internal_maybe_mirror_and_predict(transform_volume(x, R))
        assert torch.allclose(rotated, transform_volume(reduced, R), atol=1e-12 * full.abs().max().item())


def test_non_cubic_patch_uses_only_shape_preserving_rotations(float64_default):
    """A (4, 8, 8) patch keeps the 8 rotations about axis 0 (x the 8 flips: 16 elements)."""
    assert len(shape_preserving_rotations((4, 8, 8))) == 8
    assert len(shape_preserving_rotations((4, 8, 12))) == 4, "180-degree rotations only"
    assert len(shape_preserving_rotations((8, 8, 8), (1.0, 1.0, 2.0))) == 8, "spacing counts like size"
    net = _plain()
    predictor = _predictor(net, "none", (4, 8, 8))
    x = torch.randn(1, 1, 4, 8, 8)
    reduced = predictor._internal_maybe_mirror_and_predict(x)
    elements = [R for R in grid_symmetries() if abs(R[0, 0]) == 1]
    assert predictor.network.calls == len(elements) == 16
    assert torch.allclose(reduced, _full_average(net, x, elements), atol=1e-12)


def test_rotation_tta_none_is_nnunets_mirroring_and_disable_tta_drops_flips(float64_default):
    net = _plain()
    predictor = _predictor(net, "none", (8, 8, 8))
    x = torch.randn(1, 1, 8, 8, 8)
    predictor.rotation_tta = "none"
    stock = predictor._internal_maybe_mirror_and_predict(x)
    assert predictor.network.calls == 8
    assert torch.allclose(stock, _full_average(net, x, [R for R in grid_symmetries() if torch.equal(R, R.diag().diag())]))
    predictor.rotation_tta, predictor.use_mirroring = "grid", False
    assert len(predictor.tta_transforms()) == 24, "--disable_tta: rotations only"


def test_group_bookkeeping_and_bad_values():
    assert len(tta_group((8, 8, 8), None, None, "none", mirroring=False)) == 24
    so3 = tta_group((8, 8, 8), None, (0,), "so3")
    assert len(so3) == 48 and [len(tta_passes(so3, s)) for s in ("so3", "o3", "none")] == [2, 1, 48]
    assert torch.equal(tta_passes(so3, "so3")[0], torch.eye(3, dtype=torch.float64)), "identity first"
    assert trainer_symmetry("nnUNetTrainer").name == "none", "stock trainers have no symmetry attribute"
    assert trainer_symmetry("nnUNetTrainerE3nnO3").name == "o3"
    with pytest.raises(ValueError, match="rotation_tta"):
        RotationTTAPredictor(rotation_tta="all", device=torch.device("cpu"))
    with pytest.raises(ValueError, match="3D patch"):
        shape_preserving_rotations((8, 8))


def _sliding_window_predictor(net, patch_size, symmetric_tiling, symmetry=None):
    """A predictor that runs nnU-Net's own ``predict_sliding_window_return_logits`` (Gaussian weights, float16
    sums) on ``net``, without TTA."""
    predictor = RotationTTAPredictor(rotation_tta="none", use_mirroring=False, symmetric_tiling=symmetric_tiling,
                                     symmetry=symmetry,
                                     tile_step_size=0.5, use_gaussian=True, perform_everything_on_device=False,
                                     device=torch.device("cpu"), allow_tqdm=False)
    predictor.network = net.eval()
    predictor.configuration_manager = SimpleNamespace(patch_size=list(patch_size), spacing=[1.0, 1.0, 1.0])
    predictor.label_manager = SimpleNamespace(num_segmentation_heads=3)
    return predictor


def test_symmetric_tiling_makes_the_case_level_prediction_exact_under_grid_rotations():
    """A steerable network through nnU-Net's sliding window, 8^3 patch, on a (7, 13, 13) case: 7 is padded by
    an odd 1 (nnU-Net: 0 before, 1 after), 13 is tiled at 0, 2, 5 (mirrored 0, 3, 5) and the overlapping
    tiles are weighted by a Gaussian centred at voxel 4 of 0..7. nnU-Net's tiling breaks the equivariance of
    the whole case under a quarter and a half turn about axis 0 and a half turn about axis 1 (which flips the
    odd-padded axis); ``symmetric_tiling`` restores it up to nnU-Net's float16 sums (with the padding and
    offsets but nnU-Net's Gaussian the quarter turn was still off by 0.69 of the largest logit)."""
    torch.manual_seed(0)
    net = _e3nn("so3").float()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "norm" in name:
                p.normal_()
    x = torch.randn(1, 7, 13, 13)
    assert RotationTTAPredictor(symmetric_tiling=True, device=torch.device("cpu")).symmetric_tiling
    turns = {"quarter about 0": lambda v: torch.rot90(v, 1, (2, 3)), "half about 0": lambda v: torch.flip(v, (2, 3)),
             "half about 1": lambda v: torch.flip(v, (1, 3))}
    errors = {}
    for symmetric in (False, True):
        predictor = _sliding_window_predictor(net, (8, 8, 8), symmetric)
        logits = predictor.predict_sliding_window_return_logits(x).float()
        assert logits.shape == (3, 7, 13, 13)
        scale = logits.abs().max().item()
        for name, turn in turns.items():
            rotated = predictor.predict_sliding_window_return_logits(turn(x)).float()
            errors[symmetric, name] = (rotated - turn(logits)).abs().max().item() / scale
    for name in turns:
        assert errors[False, name] > 0.05, f"nnU-Net's tiling, {name}: not exact ({errors[False, name]:.2g})"
        assert errors[True, name] < 4e-3, f"symmetric tiling, {name}: exact to float16 ({errors[True, name]:.2g})"


def test_symmetric_tiling_pads_odd_shortfalls_and_mirrors_offsets():
    predictor = _sliding_window_predictor(_plain(), (8, 8, 8), True)
    assert predictor.symmetric_padding((7, 13, 6)) == [1, 0, 0]  # 6: an even shortfall nnU-Net pads 1 / 1
    slicers = predictor._internal_get_sliding_window_slicers((9, 13, 8))
    offsets = [sorted({s[axis + 1].start for s in slicers}) for axis in range(3)]
    assert offsets == [[0, 1], [0, 2, 3, 5], [0]]
    predictor.symmetric_tiling = False
    assert sorted({s[2].start for s in predictor._internal_get_sliding_window_slicers((9, 13, 8))}) == [0, 2, 5]


def test_symmetric_steps_are_mirror_symmetric_and_cost_at_most_one_tile_per_axis():
    """Every size from one to four patches: offsets from 0 to ``n - p``, mirror-symmetric, consecutive tiles
    overlapping at least as much as nnU-Net's step asks, nnU-Net's own offsets where they are symmetric, and
    at most one tile more than nnU-Net's (an odd count on an odd span)."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    assert symmetric_steps((49, 32, 75), (32, 32, 32), 0.5) == [[0, 6, 11, 17], [0], [0, 14, 29, 43]]
    extra = 0
    for p in (8, 32, 64):
        for n in range(p, 4 * p + 1):
            (ours,), (stock,) = symmetric_steps((n,), (p,), 0.5), compute_steps_for_sliding_window((n,), (p,), 0.5)
            assert ours[0] == 0 and ours[-1] == n - p and ours == sorted(n - p - t for t in ours), (n, p, ours)
            assert max(np.diff(ours), default=0) <= max(np.diff(stock), default=0), (n, p, ours, stock)
            if stock == sorted(n - p - t for t in stock):
                assert ours == stock, (n, p)
            assert len(ours) - len(stock) in (0, 1) and (len(ours) == len(stock) or len(stock) % 2 == (n - p) % 2 == 1)
            extra += len(ours) - len(stock)
    assert extra > 0, "some sizes need one tile more"


def test_symmetric_gaussian_is_flip_invariant_positive_and_cached():
    device = torch.device("cpu")
    gaussian = symmetric_gaussian((8, 6, 5), device)
    assert gaussian.dtype == torch.float16 and gaussian.shape == (8, 6, 5) and bool((gaussian > 0).all())
    for dims in [(0,), (1,), (2,), (0, 1, 2)]:
        assert torch.equal(torch.flip(gaussian, dims), gaussian), dims
    assert symmetric_gaussian((8, 6, 5), device) is gaussian, "built once per patch size, as nnU-Net's"


@pytest.mark.parametrize("symmetry,rotation_tta,patch,expected", [
    ("none", "none", (8, 8, 8), False),  # a stock network without rotation TTA: nnU-Net's sliding window
    ("none", "grid", (8, 8, 8), True),
    ("so3", "none", (8, 8, 8), True),
    ("f123", "none", (8, 8, 8), True),
    ("so3", "none", (8, 8), False),  # 2D configurations keep nnU-Net's
])
def test_symmetric_tiling_auto_where_the_predictor_is_grid_equivariant(symmetry, rotation_tta, patch, expected):
    predictor = _sliding_window_predictor(_plain(), patch, "auto", symmetry=symmetry)
    predictor.rotation_tta = rotation_tta
    assert predictor.tiles_symmetrically() is expected
    predictor.symmetric_tiling = False
    assert predictor.tiles_symmetrically() is False
    with pytest.raises(ValueError, match="symmetric_tiling"):
        RotationTTAPredictor(symmetric_tiling="yes", device=torch.device("cpu"))
