"""MirrorSymmetricConv3d / ConvTranspose3d: exact flip equivariance, free parameters, eval cache, init."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nnunet_equivariant.layers import (
    SYMMETRIES,
    MirrorSymmetricConv3d,
    MirrorSymmetricConvTranspose3d,
    symmetry_axes,
)
from nnunet_equivariant.layers.mirror_conv import mirror_conv_op
from nnunet_equivariant.testing import assert_equivariant, axis_flips, equivariance_error, flips_of


def flip_concatenate(free, kernel_size, axes):
    """The paper's construction: W (+) T_a(W) along each symmetric axis (odd k: middle slice shared)."""
    w = free
    for a in axes:
        d, k = 2 + a, kernel_size[a]
        mirrored = w.flip(d)
        if k % 2:
            mirrored = mirrored.narrow(d, 1, w.shape[d] - 1)
        w = torch.cat([w, mirrored], d)
    return w


@pytest.mark.parametrize("symmetry", SYMMETRIES[1:])
@pytest.mark.parametrize("kernel_size", [3, 4, (1, 3, 5)])
def test_conv_commutes_with_flips_of_its_axes_and_only_those(symmetry, kernel_size):
    torch.manual_seed(0)
    axes = symmetry_axes(symmetry)
    k = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
    padding = [kk // 2 if kk % 2 else 0 for kk in k]  # even kernels stay centred without padding
    conv = MirrorSymmetricConv3d(3, 4, k, padding=padding, symmetry=symmetry, dtype=torch.float64)
    for size in [(8, 6, 10), (7, 9, 5)]:  # even and odd lengths
        x = torch.randn(2, 3, *size, dtype=torch.float64)
        assert_equivariant(conv, x, flips_of(axes), tol=1e-12)
        others = [a for a in range(3) if a not in axes and k[a] > 1]
        for a in others:
            with torch.no_grad():
                err = equivariance_error(conv, x, axis_flips([a]))
            assert err > 1e-3, f"a flip along the free axis {a} is not a symmetry of a random kernel"


@pytest.mark.parametrize("symmetry", SYMMETRIES)
def test_free_weight_is_the_paper_half_kernel(symmetry):
    torch.manual_seed(0)
    axes = symmetry_axes(symmetry)
    for k in [(3, 3, 3), (4, 4, 4), (5, 2, 1), (16, 16, 16)]:
        conv = MirrorSymmetricConv3d(2, 5, k, symmetry=symmetry)
        free = [(kk + 1) // 2 if a in axes else kk for a, kk in enumerate(k)]
        assert tuple(conv.weight.shape) == (5, 2, *free), "only the half kernel along symmetric axes is trained"
        assert sum(p.numel() for p in conv.parameters()) == 5 * 2 * math.prod(free) + 5
        assert set(conv.state_dict()) == {"weight", "bias"}, "state_dict holds the free half and the bias"
        full = conv.symmetric_weight
        assert full.shape == (5, 2, *k)
        assert torch.equal(full, flip_concatenate(conv.weight, k, axes)), "assembly is flip-and-concatenate"
        for a in axes:
            assert torch.equal(full, full.flip(2 + a)), f"kernel is its own mirror image along axis {a}"


def test_building_on_the_meta_device_first_does_not_change_later_layers():
    """Parameter counting builds networks under ``torch.device("meta")``; the cached expansion must not
    keep anything from that context."""
    with torch.device("meta"):
        MirrorSymmetricConv3d(2, 3, (3, 4, 5), symmetry="f13")
    conv = MirrorSymmetricConv3d(2, 3, (3, 4, 5), symmetry="f13")
    assert torch.equal(conv.symmetric_weight, flip_concatenate(conv.weight, (3, 4, 5), (0, 2)))


def test_gradient_reaches_each_free_entry_from_all_its_mirror_copies():
    torch.manual_seed(0)
    conv = MirrorSymmetricConv3d(2, 3, 3, padding=1, symmetry="f12", dtype=torch.float64)
    x = torch.randn(1, 2, 5, 6, 4, dtype=torch.float64)
    conv(x).square().sum().backward()
    free = conv.weight.detach().clone().requires_grad_()
    F.conv3d(x, flip_concatenate(free, (3, 3, 3), (0, 1)), conv.bias, padding=1).square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, free.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride, kernel, padding", [(2, 2, 0), (4, 4, 0), (2, 4, 1), (2, 3, 1)])
def test_strided_conv_is_symmetric_exactly_when_its_windows_are_centred(stride, kernel, padding):
    torch.manual_seed(0)
    conv = MirrorSymmetricConv3d(2, 3, kernel, stride, padding, symmetry="f123", dtype=torch.float64)
    for length in (16, 15):
        x = torch.randn(1, 2, length, length, length, dtype=torch.float64)
        n = (length + 2 * padding - kernel) // stride + 1
        centred = kernel - 1 - 2 * padding + (n - 1) * stride == length - 1
        if centred:
            assert_equivariant(conv, x, flips_of((0, 1, 2)), tol=1e-12)
        else:
            with pytest.raises(ValueError, match="off-centre"):
                conv(x)


def test_stride2_odd_kernel_trap_is_caught_by_the_equivariance_check():
    """The known trap (stride-2 conv, odd kernel, even length) breaks the symmetry even with a symmetric
    kernel: the test harness sees it (so the network tests can fail), and our layer refuses to run it."""
    torch.manual_seed(0)
    sym = MirrorSymmetricConv3d(2, 3, 3, 2, 1, symmetry="f123", dtype=torch.float64)
    plain = nn.Conv3d(2, 3, 3, 2, 1, dtype=torch.float64)
    with torch.no_grad():
        plain.weight.copy_(sym.symmetric_weight)
        plain.bias.copy_(sym.bias)
    x = torch.randn(1, 2, 8, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert equivariance_error(plain, x, axis_flips([0])) > 0.1
    with pytest.raises(AssertionError, match="does not transform"):
        assert_equivariant(plain, x, flips_of((0, 1, 2)))
    with pytest.raises(ValueError, match="off-centre"):
        sym(x)
    x_odd = torch.randn(1, 2, 9, 9, 9, dtype=torch.float64)  # odd lengths: windows centred at 0, 2, .., 8
    assert_equivariant(sym, x_odd, flips_of((0, 1, 2)), tol=1e-12)


@pytest.mark.parametrize("symmetry", ["f2", "f13", "f123"])
@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), ((1, 2, 2), (1, 2, 2), 0), (3, 2, 1), (4, 2, 1)])
def test_transposed_conv_commutes_with_flips(symmetry, kernel, stride, padding):
    torch.manual_seed(0)
    up = MirrorSymmetricConvTranspose3d(3, 2, kernel, stride, padding, symmetry=symmetry, dtype=torch.float64)
    for size in [(4, 5, 3), (6, 2, 7)]:
        x = torch.randn(2, 3, *size, dtype=torch.float64)
        assert_equivariant(up, x, flips_of(symmetry_axes(symmetry)), tol=1e-12)


def test_transposed_conv_rejects_one_sided_output_padding():
    with pytest.raises(ValueError, match="output_padding"):
        MirrorSymmetricConvTranspose3d(2, 2, 3, 2, 1, output_padding=1, symmetry="f1")
    up = MirrorSymmetricConvTranspose3d(2, 2, 3, 2, 1, symmetry="f1")
    assert up(torch.randn(1, 2, 4, 4, 4), output_size=[7, 7, 7]).shape[2:] == (7, 7, 7)
    with pytest.raises(ValueError, match="output_padding"):
        up(torch.randn(1, 2, 4, 4, 4), output_size=[8, 8, 8])
    MirrorSymmetricConvTranspose3d(2, 2, 3, 2, 1, output_padding=(0, 1, 1), symmetry="f1")  # free axes may pad


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="'f4'"):
        MirrorSymmetricConv3d(1, 1, 3, symmetry="f4")
    with pytest.raises(ValueError, match="same"):
        MirrorSymmetricConv3d(1, 1, 4, padding="same", symmetry="f2")
    MirrorSymmetricConv3d(1, 1, (4, 3, 4), padding="same", symmetry="f2")  # odd along the symmetric axis


def test_eval_cache_is_bit_identical_and_invalidated_by_weight_changes():
    torch.manual_seed(0)
    conv = MirrorSymmetricConv3d(4, 4, 3, padding=1, symmetry="f123")
    x = torch.randn(1, 4, 6, 6, 6)
    reference = conv(x).detach()  # training mode: assembled on every call
    conv.eval()
    with torch.no_grad():
        cached = conv(x)
        kernel = conv.symmetric_weight
        assert conv.symmetric_weight is kernel, "eval kernel is built once and reused"
        assert conv.eval().symmetric_weight is kernel, "eval() again (nnU-Net does it per case) keeps it"
    assert torch.equal(cached, reference), "the cached path gives bit-identical outputs"

    opt = torch.optim.SGD(conv.parameters(), lr=0.1)
    conv.train()
    conv(x).sum().backward()
    opt.step()
    after_step = conv(x).detach()
    conv.eval()
    with torch.no_grad():
        assert conv.symmetric_weight is not kernel, "an optimizer step invalidates the cached kernel"
        assert torch.equal(conv(x), after_step)

        state = {k: v.clone() for k, v in conv.state_dict().items()}
        kernel = conv.symmetric_weight
        conv.load_state_dict({k: v * 2 for k, v in state.items()})
        assert conv.symmetric_weight is not kernel, "load_state_dict invalidates the cached kernel"
        torch.testing.assert_close(conv.symmetric_weight, 2 * kernel, rtol=0, atol=0)
        double = conv.double()
        assert double.symmetric_weight.dtype == torch.float64, "a dtype change rebuilds the kernel"
    with torch.inference_mode():
        assert torch.equal(conv(x.double()), conv(x.double()))


def test_eval_with_gradients_assembles_a_fresh_kernel_each_call():
    conv = MirrorSymmetricConv3d(2, 2, 3, padding=1, symmetry="f1").eval()
    x = torch.randn(1, 2, 4, 4, 4)
    for _ in range(2):  # a cached kernel with a graph would fail the second backward
        conv(x).sum().backward()
    assert conv.weight.grad is not None


def test_state_dict_round_trip_and_stock_weights_are_refused():
    torch.manual_seed(0)
    a = MirrorSymmetricConv3d(3, 5, 3, padding=1, symmetry="f23")
    b = MirrorSymmetricConv3d(3, 5, 3, padding=1, symmetry="f23")
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 5, 5, 5)
    assert torch.equal(a(x), b(x))
    with pytest.raises(RuntimeError, match="size mismatch"):
        b.load_state_dict(nn.Conv3d(3, 5, 3, padding=1).state_dict())


def test_initialisation_uses_the_fan_of_the_full_kernel():
    torch.manual_seed(0)
    conv = MirrorSymmetricConv3d(64, 64, 3, padding=1, symmetry="f123")
    fan_in = 64 * 27
    assert conv.weight.abs().max() <= 1 / math.sqrt(fan_in), "PyTorch's default bound for a 3x3x3 kernel"
    assert conv.bias.abs().max() <= 1 / math.sqrt(fan_in)
    conv.kaiming_normal_(a=1e-2)
    expected = math.sqrt(2 / (1 + 1e-4)) / math.sqrt(fan_in)
    assert abs(conv.weight.std().item() / expected - 1) < 0.05, "He std of the full kernel, not of the half"
    assert abs(conv.symmetric_weight.std().item() / expected - 1) < 0.05


def test_compiles_without_graph_breaks_and_runs_under_autocast():
    torch.manual_seed(0)
    conv = MirrorSymmetricConv3d(2, 3, 3, padding=1, symmetry="f13")
    x = torch.randn(1, 2, 6, 6, 6)
    compiled = torch.compile(conv, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), conv(x))
    compiled(x).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.shape == conv.weight.shape
    conv.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), conv(x))  # the eval cache is bypassed while tracing
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16
    assert conv.symmetric_weight.dtype == torch.float32, "the kernel is assembled in the weight's dtype"


@pytest.mark.parametrize("symmetry", ["f12", None])
def test_symmetry_fixed_conv_classes_pickle(symmetry):
    """The module-level ``__getattr__`` resolves the generated classes by name, so pickle finds them."""
    import pickle

    conv = mirror_conv_op(symmetry)(2, 3, 3)
    restored = pickle.loads(pickle.dumps(conv))
    assert type(restored) is mirror_conv_op(symmetry) and restored.symmetry == symmetry
    torch.testing.assert_close(restored.weight, conv.weight)
