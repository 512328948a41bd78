"""Mixed precision as nnU-Net trains on a GPU (autocast + ``GradScaler``), proven on the CPU in float16 and
bfloat16 (both supported by torch's CPU autocast for conv3d): what stays in float32 and why, a whole network
trained 50 steps through nnU-Net's own ``train_step``, and the grid-equivariance error under autocast next
to stock nnU-Net's own float16 rounding (issue 18)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3

from nnunet_equivariant.layers import steerable_conv
from nnunet_equivariant.layers._norm_gate import norm_gate
from nnunet_equivariant.layers.mirror_conv import MirrorSymmetricConv3d
from nnunet_equivariant.layers.norm import EquivariantInstanceNorm
from nnunet_equivariant.layers.steerable_block import SteerableBlock
from nnunet_equivariant.testing import autocast_equivariance, plans_configuration
from nnunet_equivariant.training import e3nn, mirror
from nnunet_equivariant.training.standalone import autocast_on_cpu, standalone_trainer, synthetic_batch

HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_steerable_kernel_is_assembled_in_float32_under_autocast(dtype, monkeypatch):
    """The kernel = weights x basis, assembled in the weights' dtype (float32) in the forward and backward
    pass of training and for the eval cache; only the convolution itself runs in autocast's dtype."""
    assembled = []
    original = steerable_conv._assemble

    def recording(weight, layout, bases):
        kernel = original(weight, layout, bases)
        assembled.append((torch.is_autocast_enabled("cpu"), kernel.dtype))
        return kernel

    monkeypatch.setattr(steerable_conv, "_assemble", recording)
    torch.manual_seed(0)
    conv = steerable_conv.SteerableConv3d("2x0e + 1x1e", "2x0e + 1x1e + 1x2e", kernel_size=3)
    x = torch.randn(1, 5, 6, 6, 6)
    with torch.autocast("cpu", dtype=dtype):
        out = conv(x)
    out.float().square().sum().backward()
    assert out.dtype == dtype, "the convolution runs in autocast's dtype, as F.conv3d would"
    assert conv.weight.grad.dtype == torch.float32 and torch.isfinite(conv.weight.grad).all()
    conv.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        conv(x)
    assert len(assembled) >= 3, "forward, backward and the eval cache each assembled the kernel"
    assert all(d == torch.float32 and not on for on, d in assembled), assembled
    assert conv._cache[1].dtype == torch.float32, "the cached eval kernel stays float32"


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_mirror_kernel_is_assembled_in_float32_under_autocast(dtype):
    conv = MirrorSymmetricConv3d(2, 3, 3, padding=1, symmetry="f123")
    with torch.autocast("cpu", dtype=dtype):
        kernel = conv.symmetric_weight
        out = conv(torch.randn(1, 2, 6, 6, 6))
    assert kernel.dtype == torch.float32 and out.dtype == dtype
    assert torch.equal(kernel, kernel.flip(2)) and torch.equal(kernel, kernel.flip(3, 4)), \
        "the assembled kernel is exactly symmetric"


def _large_field(irreps: str, magnitude: float) -> torch.Tensor:
    """A float16 field whose squares overflow float16 (max 65504) at ``magnitude`` ~ 300 and above."""
    torch.manual_seed(1)
    dim = o3.Irreps(irreps).dim
    return (magnitude * (1 + torch.randn(2, dim, 6, 6, 6))).half()


def test_instance_norm_statistics_are_float32_under_autocast():
    """Variances and vector norms of float16 activations overflow float16 (the squares of values ~1000);
    the norm computes its statistics in float32 and returns autocast's dtype."""
    irreps = "2x0e + 2x1e + 1x2e"
    x = _large_field(irreps, 1000.0)
    assert not torch.isfinite(x.square().sum((2, 3, 4))).all(), "a float16 variance would overflow here"
    norm = EquivariantInstanceNorm(irreps)
    with torch.autocast("cpu", dtype=torch.float16):
        out = norm(x)
    reference = norm(x.float())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("path", ["fused", "composition"])
def test_norm_gate_statistics_and_gradients_are_float32_under_autocast(path):
    """The same for a steerable block's norm and gate, forward and backward, on both paths: the fused node
    (eager training) and the composition (what ``torch.compile`` traces). Parameter gradients are sums over
    the patch: accumulated in float32 (in float16 they overflowed to inf here before the fix)."""
    torch.manual_seed(2)
    block = SteerableBlock("1x0e", "2x0e + 1x1e + 1x2e", 3, (1.0, 1.0, 1.0), False, 3, 2, "leaky_relu",
                           "gaussian_shells")
    assert block._fused is not None, "the fused node is what this test covers"
    x = _large_field(str(block.gate.irreps_in), 1000.0).requires_grad_()
    x32 = x.detach().float().requires_grad_()
    reference = block.gate(block.norm(x32))  # the float32 composition, through autograd
    upstream = 0.5 + torch.rand_like(reference)  # one sign: the sums over the patch add up
    (reference * upstream).sum().backward()
    expected = {"x": x32.grad, "weight": block.norm.weight.grad.clone(), "bias": block.norm.bias.grad.clone()}
    block.zero_grad()
    if path == "fused":
        out = norm_gate(x, block.norm.weight, block.norm.bias, block._fused)
    else:
        out = block.gate(block.norm(x))
    (out.float() * upstream).sum().backward()
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference.detach(), rtol=5e-3, atol=5e-3)
    got = {"x": x.grad.float(), "weight": block.norm.weight.grad, "bias": block.norm.bias.grad}
    assert block.norm.weight.grad.dtype == torch.float32
    for name, g in got.items():  # sums over the patch overflow float16: accumulated in float32
        assert torch.isfinite(g).all(), name
        error = float((g - expected[name]).norm() / expected[name].norm())
        # the input gradient is stored in float16 and cancels (g - mean g - x_hat mean(g x_hat)) in channels
        # with a near-constant upstream gradient: ~7 % there, as in the unfused composition through autograd
        limit = 0.15 if name == "x" else 5e-3
        assert error < limit, f"{path}: the gradient of {name} is off by {error:.3g} (relative)"


# --- a whole network, trained through nnU-Net's own train_step ----------------------------------------

STEPS = 50
# half-precision convolutions on the CPU take ~20x float32's time (no native kernels): 8^3 patches, and the
# steerable network only (the mirror network's one special op, its kernel assembly, is covered above)


def _configuration():
    return plans_configuration([[1, 1, 1], [2, 2, 2], [2, 2, 2]], None, [8, 16, 16], n_conv=1,
                               patch_size=[8] * 3, spacing=[1.0, 1.0, 1.0]).configuration


def _train(cls, dtype, work) -> list[float]:
    torch.manual_seed(0)
    trainer = standalone_trainer(cls, _configuration(), work, compile=False)
    batches = [synthetic_batch(trainer, seed=s) for s in range(4)]
    trainer.network.train()
    losses = []
    if dtype is None:
        for step in range(STEPS):
            losses.append(float(trainer.train_step(batches[step % 4])["loss"]))
        return losses, trainer, None
    with autocast_on_cpu(dtype, trainer=trainer):
        scaler = trainer.grad_scaler
        for step in range(STEPS):
            losses.append(float(trainer.train_step(batches[step % 4])["loss"]))
    return losses, trainer, scaler


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory):
    return _train(e3nn.nnUNetTrainerE3nn, None, tmp_path_factory.mktemp("float32"))[0]


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_network_trains_50_steps_under_autocast_with_grad_scaler(dtype, float32_run, tmp_path):
    losses, trainer, scaler = _train(e3nn.nnUNetTrainerE3nn, dtype, tmp_path)
    reference = float32_run
    assert np.isfinite(losses).all(), f"loss went inf/NaN under {dtype}: {losses}"
    assert all(torch.isfinite(p).all() for p in trainer.network.parameters()), "a weight became inf/NaN"
    assert scaler.is_enabled() and np.isfinite(scaler.get_scale()) and scaler.get_scale() >= 1.0
    start, end, end32 = np.mean(losses[:4]), np.mean(losses[-8:]), np.mean(reference[-8:])
    assert end < 0.8 * start, f"it learns under {dtype}: {start:.3f} -> {end:.3f}"
    assert end32 < 0.8 * np.mean(reference[:4])
    assert abs(end - end32) < 0.1 * end32 + 0.02, \
        f"the {dtype} loss tracks float32: {end:.4f} vs {end32:.4f} (last 8 steps)"


# --- grid-equivariance error under autocast, ours vs stock nnU-Net's own float16 rounding -------------------

def _networks(steerable=None):
    """Stock ``PlainConvUNet``, the steerable network of ``steerable`` (a trainer; ``nnUNetTrainerE3nn``) and
    ``MirrorUNet`` on one small 3-stage configuration, seeded."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    config = plans_configuration([[1, 1, 1], [2, 2, 2], [2, 2, 2]], None, [8, 16, 16], n_conv=2,
                                 patch_size=[16] * 3, spacing=[1.0, 1.0, 1.0])
    torch.manual_seed(0)
    stock = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                   config.network_arch_init_kwargs_req_import, 1, 3, allow_init=True,
                                   deep_supervision=False)
    ours = (steerable or e3nn.nnUNetTrainerE3nn).build_network_architecture(None, config, 1, 3, False)
    mirrored = mirror.nnUNetTrainerMirror.build_network_architecture(None, config, 1, 3, False)
    return stock, ours, mirrored


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_equivariance_under_autocast_is_at_stock_rounding_level(dtype):
    """Under autocast our networks stay equivariant up to (4x) the low-precision rounding nnU-Net's own network
    shows against float32 (what ``nnUNetv2_predict`` users already accept), while stock is not
    equivariant at all; in float32 ours are exact."""
    stock, ours, mirrored = _networks()
    torch.manual_seed(3)
    x = torch.randn(1, 1, 16, 16, 16)
    stock_err = autocast_equivariance(stock, x, "so3", dtype)
    ours_err = autocast_equivariance(ours, x, "so3", dtype)
    mirror_err = autocast_equivariance(mirrored, x, "f123", dtype)
    assert autocast_equivariance(ours, x, "so3", None)["equivariance"] < 1e-5
    assert autocast_equivariance(mirrored, x, "f123", None)["equivariance"] < 1e-5
    assert stock_err["equivariance"] > 0.1, "stock nnU-Net is not rotation-equivariant (control)"
    for name, err in (("E3nnUNet", ours_err), ("MirrorUNet", mirror_err)):
        assert 0 < err["equivariance"] <= 4 * stock_err["vs_float32"], \
            f"{name} under {dtype}: equivariance error {err} vs stock's rounding {stock_err}"
        # the deviation from float32 itself is larger for E3nnUNet (float16: 1.2e-2, stock 1.9e-3): its pooling's
        # choices, next test


def test_float16_deviation_of_the_steerable_network_comes_from_norm_pooling_choices(monkeypatch):
    """Under float16 autocast the paper's network (``nnUNetTrainerE3nnShells``) deviates from float32 more than
    stock nnU-Net (1.2e-2 against 1.9e-3 here) because ``NormMaxPool3d`` picks, per window and vector copy,
    the voxel of largest norm: where two norms tie to within float16 rounding the two runs pick different
    vectors (a discontinuous choice; a handful of the windows). With each pool's choices replayed from the
    float32 run, the float16 deviation is at stock's rounding level: nothing else in the network (kernels,
    norms, gates) loses precision. The default network (3^3, the invariant head) is at stock's level as it is
    (1.5e-3: its two choices that flip move little)."""
    from nnunet_equivariant.layers import NormMaxPool3d

    stock, ours, _ = _networks(e3nn.nnUNetTrainerE3nnShells)
    default = _networks()[1].eval()
    torch.manual_seed(3)
    x = torch.randn(1, 1, 16, 16, 16)
    stock.eval()
    with torch.no_grad():
        stock32 = stock(x)
        with torch.autocast("cpu", dtype=torch.float16):
            stock_rounding = float((stock(x).float() - stock32).norm() / stock32.norm())
    choose = NormMaxPool3d.argmax_norm
    calls: list[torch.Tensor] = []

    def recording(self, xb, d):
        calls.append(choose(self, xb, d))
        return calls[-1]

    def run(dtype, pool_choice):
        monkeypatch.setattr(NormMaxPool3d, "argmax_norm", pool_choice)
        calls.clear()
        ours.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = ours(x).float()
        return out, list(calls)

    reference, float32_choices = run(None, recording)
    free, float16_choices = run(torch.float16, recording)
    replay = iter(float32_choices)
    replayed, _ = run(torch.float16, lambda self, xb, d: next(replay))

    def deviation(out):
        return float((out - reference).norm() / reference.norm())

    flips = sum(int((a != b).sum()) for a, b in zip(float32_choices, float16_choices))
    windows = sum(a.numel() for a in float32_choices)
    assert 0 < flips < 0.01 * windows, f"{flips} of {windows} pooling choices differ between float16 and float32"
    assert deviation(replayed) <= 2 * stock_rounding, \
        f"with float32's pooling choices: {deviation(replayed):.2e} vs stock's rounding {stock_rounding:.2e}"
    print(f"float16 vs float32: stock {stock_rounding:.2e}, E3nnUNet {deviation(free):.2e}, with float32's pooling "
          f"choices {deviation(replayed):.2e}; {flips} of {windows} choices differ")
    assert deviation(free) > 2 * deviation(replayed), (deviation(free), deviation(replayed))
    monkeypatch.setattr(NormMaxPool3d, "argmax_norm", choose)
    with torch.no_grad():
        default32 = default(x)
        with torch.autocast("cpu", dtype=torch.float16):
            default16 = default(x).float()
    default_deviation = float((default16 - default32).norm() / default32.norm())
    assert default_deviation <= 2 * stock_rounding, f"default network: {default_deviation:.2e} vs {stock_rounding:.2e}"
