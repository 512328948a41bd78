"""Tiled FFT convolution (layers/_fft_conv.py): equals conv3d and its backward for every layer shape the
U-Net uses (anisotropic kernels, odd sizes, batch > 1), through SteerableConv3d (gradcheck), the whole
network's grid equivariance with it on, the eval spectrum cache following weight changes, AMP and compile."""
import pytest
import torch
import torch.nn.functional as F

from nnunet_equivariant.layers import SteerableConv3d
from nnunet_equivariant.layers import _fft_conv as fc
from nnunet_equivariant.networks import E3nnSpec, E3nnUNet
from nnunet_equivariant.testing import assert_equivariant, grid_rotations, grid_symmetries

SMALL = ["1x0e + 1x1e + 1x2e", "2x0e + 1x1e + 1x2e", "2x0e + 2x1e + 1x2e"]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max()) if a.numel() else 0.0


def _unet(spacing=(1.0, 1.0, 1.0), strides=((1, 1, 1), (2, 2, 2), (2, 2, 2)), symmetry="so3", features=SMALL):
    net = E3nnUNet(input_channels=2, num_classes=3, n_stages=len(strides), features_per_stage=features,
                   strides=[list(s) for s in strides], n_conv_per_stage=2, n_conv_per_stage_decoder=1,
                   deep_supervision=True, spacing=spacing, spec=E3nnSpec(symmetry=symmetry))
    net.apply(net.initialize)
    with torch.no_grad():  # random affine norm parameters, as in test_e3nn_unet.py
        for name, p in net.named_parameters():
            if ".norm." in name:
                p.normal_()
    return net


def _layer_calls(net, x):
    """``(input, kernel)`` of every SteerableConv3d call in one forward pass of ``net``."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, inp, out: calls.append((inp[0].detach(), m.build_kernel().detach())))
             for m in net.modules() if isinstance(m, SteerableConv3d)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return calls


@pytest.mark.parametrize("spacing,strides,size", [
    ((1.0, 1.0, 1.0), ((1, 1, 1), (2, 2, 2), (2, 2, 2)), (12, 8, 20)),
    ((3.0, 1.0, 1.0), ((1, 1, 1), (1, 2, 2), (2, 2, 2)), (4, 12, 8)),  # kernels (1, 5, 5) and (3, 5, 5)
    ((1.0, 0.8, 2.5), ((1, 1, 1), (2, 2, 1), (2, 2, 2)), (12, 12, 4)),
])
def test_fft_equals_direct_for_every_layer_of_the_unet_in_float64(float64_default, spacing, strides, size):
    net = _unet(spacing, strides)
    calls = _layer_calls(net, torch.randn(2, 2, *size))
    shapes = {tuple(k.shape[2:]) for _, k in calls}
    assert len(shapes) >= 2 and any(len(set(s)) > 1 for s in shapes) == (spacing != (1.0, 1.0, 1.0))
    for x, kernel in calls:
        ref = F.conv3d(x, kernel, padding=[k // 2 for k in kernel.shape[2:]])
        g = torch.randn_like(ref)
        ref_gx, ref_gk = fc._direct_backward(g, x, kernel, True, True)
        for fft_size in (4, 9, 16):  # many partial tiles, odd size, one tile
            out = fc.fft_conv3d(x, kernel, fft_size)
            gx, gk = fc.fft_conv3d_backward(g, x, kernel, fft_size)
            what = f"{tuple(x.shape)} * {tuple(kernel.shape)}, FFT size {fft_size}"
            assert _rel(out, ref) < 1e-10, f"forward differs from conv3d: {what}"
            assert _rel(gx, ref_gx) < 1e-10, f"input gradient differs from conv3d's: {what}"
            assert _rel(gk, ref_gk) < 1e-10, f"kernel gradient differs from conv3d's: {what}"
            only_x = fc.fft_conv3d_backward(g, x, kernel, fft_size, need_kernel=False)
            assert only_x[1] is None and torch.equal(only_x[0], gx)


def test_fft_equals_direct_in_float32_on_a_full_resolution_layer():
    torch.manual_seed(0)
    x, kernel = torch.randn(2, 30, 13, 11, 9), torch.randn(36, 30, 5, 5, 5)
    ref = F.conv3d(x, kernel, padding=2)
    g = torch.randn_like(ref)
    ref_gx, ref_gk = fc._direct_backward(g, x, kernel, True, True)
    for fft_size in (8, 16):
        gx, gk = fc.fft_conv3d_backward(g, x, kernel, fft_size)
        assert _rel(fc.fft_conv3d(x, kernel, fft_size), ref) < 1e-5
        assert _rel(gx, ref_gx) < 1e-5 and _rel(gk, ref_gk) < 1e-5


def test_steerable_conv_gradcheck_through_the_fft_path(float64_default):
    conv = SteerableConv3d("1x0e", "1x0e + 1x1e", kernel_size=5, spacing=(1.0, 1.0, 2.0))  # taps (5, 5, 3)
    x = torch.randn(2, 1, 3, 4, 3, requires_grad=True)
    with fc.conv_algorithm("fft", 5):  # tiles of 1 x 1 x 3 output voxels: partial tiles on every axis
        assert torch.autograd.gradcheck(lambda x, w: _conv_with_weight(conv, x, w),
                                        (x, conv.weight.detach().requires_grad_()))


def _conv_with_weight(conv, x, weight):
    from nnunet_equivariant.layers.steerable_conv import _ConvFromBasis
    return _ConvFromBasis.apply(x, weight, conv._layout, *conv._bases())


def test_unet_training_step_and_eval_match_between_algorithms(float64_default):
    net = _unet()
    x = torch.randn(2, 2, 8, 12, 8)
    outputs, grads = {}, {}
    for mode in ("direct", "fft"):
        with fc.conv_algorithm(mode, 4 if mode == "fft" else None):
            net.train()
            net.zero_grad()
            sum((o * o).mean() for o in net(x)).backward()
            grads[mode] = torch.cat([p.grad.flatten() for p in net.parameters()])
            net.eval()
            with torch.no_grad():
                outputs[mode] = net(x)[0]
    assert _rel(outputs["fft"], outputs["direct"]) < 1e-10
    assert _rel(grads["fft"], grads["direct"]) < 1e-10


def test_unet_is_equivariant_with_the_fft_path(float64_default):
    with fc.conv_algorithm("fft", 8):
        assert_equivariant(_unet().eval(), torch.randn(1, 2, 8, 8, 8), grid_rotations(), tol=1e-5)
        net = _unet(symmetry="o3", features=[f.replace("1e", "1o") for f in SMALL]).eval()
        assert_equivariant(net, torch.randn(1, 2, 8, 8, 8), grid_symmetries(), tol=1e-5)


def test_eval_spectrum_cache_follows_weight_changes(float64_default):
    conv = SteerableConv3d("2x0e + 1x1e", "1x0e + 2x1e", kernel_size=5).eval()
    x = torch.randn(2, 5, 9, 7, 8)

    def direct():
        with fc.conv_algorithm("direct"), torch.no_grad():
            return F.conv3d(x, conv.build_kernel(), conv._full_bias(), padding=2)

    with fc.conv_algorithm("fft", 8), torch.no_grad():
        assert _rel(conv(x), direct()) < 1e-10
        assert len(conv._cache[3]) == 1, "the kernel spectrum is cached with the kernel"
        other = SteerableConv3d("2x0e + 1x1e", "1x0e + 2x1e", kernel_size=5)
        conv.load_state_dict(other.state_dict())
        assert _rel(conv(x), direct()) < 1e-10, "load_state_dict refreshes the cached spectrum"
    conv.train()
    opt = torch.optim.SGD(conv.parameters(), lr=0.5)
    conv(x).square().mean().backward()
    opt.step()
    conv.eval()
    with fc.conv_algorithm("fft", 8), torch.no_grad():
        before = conv(x)
        assert _rel(before, direct()) < 1e-10
        conv.weight.mul_(2.0)  # in-place change without train(): the version counter invalidates the cache
        assert _rel(conv(x), direct()) < 1e-10 and not torch.allclose(conv(x), before)


def test_auto_mode_measures_once_per_shape_and_matches_direct():
    torch.manual_seed(0)
    fc.algorithm_cache().clear()
    conv = SteerableConv3d("1x0e", "2x0e + 1x1e", kernel_size=5)
    x = torch.randn(1, 1, 10, 10, 10)
    with fc.conv_algorithm("auto"):
        out = conv(x)
        out.square().mean().backward()
    keys = list(fc.algorithm_cache())
    assert {k[0] for k in keys if k[0] != "fft"} == {"forward", "backward01"}, keys
    assert all(v == "direct" or isinstance(v, int) for v in fc.algorithm_cache().values())
    with fc.conv_algorithm("direct"):
        ref = conv(x)
    assert torch.allclose(out, ref, atol=1e-5)
    with fc.conv_algorithm("auto"):
        conv(x)
    assert list(fc.algorithm_cache()) == keys, "a shape is measured once"


def test_fft_path_under_bfloat16_autocast_matches_direct_within_amp_tolerance():
    torch.manual_seed(0)
    conv = SteerableConv3d("1x0e + 1x1e", "2x0e + 1x1e + 1x2e", kernel_size=5)
    x = torch.randn(2, 4, 8, 8, 8)
    results = {}
    for mode in ("direct", "fft"):
        conv.zero_grad()
        with fc.conv_algorithm(mode, 8), torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
            conv.eval()
            with torch.no_grad():
                out_eval = conv(x)
            conv.train()
        assert out.dtype == out_eval.dtype == torch.bfloat16
        out.float().square().mean().backward()
        results[mode] = out.float(), out_eval.float(), conv.weight.grad.clone()
    for fast, ref in zip(results["fft"], results["direct"]):
        assert _rel(fast, ref) < 3e-2
    conv.eval()
    with fc.conv_algorithm("fft", 8), torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv(x)  # caches a spectrum of the bfloat16 kernel
        full = conv(x)
    with fc.conv_algorithm("direct"), torch.no_grad():
        assert _rel(full, conv(x)) < 1e-5, "float32 eval after autocast eval uses a float32 kernel spectrum"


@pytest.mark.parametrize("spatial,taps", [((4, 8, 8), (5, 5, 5)), ((2, 2, 2), (3, 3, 3)), ((8, 3, 8), (5, 5, 5)),
                                           ((6, 6, 6), (5, 5, 5))])
def test_bfloat16_kernel_gradient_is_right_where_the_map_is_smaller_than_the_kernel(spatial, taps):
    """oneDNN's bfloat16 kernel gradient is garbage when the first spatial axis is shorter than the kernel
    (torch 2.14 on a CPU with AVX512-BF16: relative error ~1 to inf): the direct backward computes such small
    maps in float32. Compared with the float32 backward of the same bfloat16-rounded tensors."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, *spatial).bfloat16()
    kernel = (torch.randn(16, 16, *taps) / 20).bfloat16()
    grad_out = torch.randn(2, 16, *spatial).bfloat16()
    with fc.conv_algorithm("direct"):
        for _ in range(3):  # the wrong gradients differed from call to call
            grad_x, grad_kernel = fc.conv3d_backward(grad_out, x, kernel)
            ref_x, ref_kernel = fc.conv3d_backward(grad_out.float(), x.float(), kernel.float())
            assert grad_x.dtype == grad_kernel.dtype == torch.bfloat16
            assert _rel(grad_kernel.float(), ref_kernel) < 1e-2 and _rel(grad_x.float(), ref_x) < 1e-2


def test_forced_fft_path_compiles_and_matches_eager():
    torch.manual_seed(0)
    conv = SteerableConv3d("1x0e + 1x1e", "2x0e + 1x1e", kernel_size=5)
    x = torch.randn(1, 4, 7, 6, 5, requires_grad=True)
    with fc.conv_algorithm("fft", 4):
        compiled = torch.compile(conv, backend="aot_eager", fullgraph=True)
        out = compiled(x)
        out.square().sum().backward()
        grad = x.grad.clone()
    x.grad = None
    with fc.conv_algorithm("direct"):
        ref = conv(x)
        ref.square().sum().backward()
    assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(grad, x.grad, atol=1e-4)


def test_bad_algorithm_settings_are_rejected():
    with pytest.raises(ValueError, match="'fastest'"):
        fc.set_conv_algorithm("fastest")
    with pytest.raises(ValueError, match="fft_size"):
        with fc.conv_algorithm("fft", 1):
            pass
    assert fc.get_conv_algorithm()[0] in fc.MODES
    with pytest.raises(ValueError, match=r"\(4, 5, 5\)"):
        fc.conv3d(torch.randn(1, 1, 6, 6, 6), torch.randn(1, 1, 4, 5, 5))
