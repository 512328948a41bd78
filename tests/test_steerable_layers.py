"""Steerable layers: exact equivariance on the grid symmetries (float64), normalisation, the eval kernel
cache, the custom backward, AMP/compile, and clear errors for bad arguments."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from e3nn import o3

from nnunet_equivariant.layers import (EquivariantGate, EquivariantInstanceNorm, GaussianBlur3d, InvariantHead,
                                       MeanPool3d, NormMaxPool3d, SteerableConv3d, TrilinearUpsample, make_pool)
from nnunet_equivariant.layers._irreps import blocks
from nnunet_equivariant.layers._norm_gate import norm_gate, norm_gate_layout
from nnunet_equivariant.layers.steerable_conv import _KernelFromBasis
from nnunet_equivariant.testing import (assert_equivariant, axis_flips, grid_rotations, grid_symmetries,
                                       irreps_D)

SO3_HIDDEN = "2x0e + 2x1e + 1x2e"
O3_MIXED = "2x0e + 1x0o + 1x1o + 1x1e + 1x2e + 1x2o"


def _randomise(module):
    """Random parameters (the norm's identity init or a zero bias could hide a broken op); a steerable
    conv's weights are random already."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not (isinstance(module, SteerableConv3d) and name == "weight"):
                p.normal_()
    return module


@pytest.mark.parametrize("radial_basis", ["gaussian_shells", "smooth_finite", "gaussian_shells_half"])
@pytest.mark.parametrize("irreps_in, irreps_out", [("1x0e", SO3_HIDDEN), (SO3_HIDDEN, "3x0e + 1x1e + 2x2e")])
def test_conv_is_so3_equivariant_on_all_24_rotations(float64_default, irreps_in, irreps_out, radial_basis):
    conv = _randomise(SteerableConv3d(irreps_in, irreps_out, kernel_size=5, radial_basis=radial_basis))
    x = torch.randn(2, conv.irreps_in.dim, 7, 8, 9)
    err = assert_equivariant(conv, x, grid_rotations(), conv.irreps_in, conv.irreps_out, tol=1e-10)
    assert err < 1e-12, "float64 exact"


@pytest.mark.parametrize("radial_basis", ["gaussian_shells", "smooth_finite", "gaussian_shells_half"])
def test_conv_is_o3_equivariant_on_all_48_symmetries(float64_default, radial_basis):
    conv = _randomise(SteerableConv3d(O3_MIXED, O3_MIXED, kernel_size=3, parity=True, radial_basis=radial_basis))
    x = torch.randn(1, conv.irreps_in.dim, 6, 7, 5)
    assert_equivariant(conv, x, grid_symmetries(), conv.irreps_in, conv.irreps_out, tol=1e-10)


def test_so3_conv_is_not_reflection_equivariant(float64_default):
    """SO(3) mode treats spherical harmonics as even: it must not pass for reflections by accident."""
    conv = SteerableConv3d("1x0e + 1x1e", "1x0e + 1x1e", kernel_size=3)
    x = torch.randn(1, 4, 6, 6, 6)
    with pytest.raises(AssertionError, match="does not transform"):
        assert_equivariant(conv, x, [axis_flips([0])], conv.irreps_in, conv.irreps_out, tol=1e-10)


@pytest.mark.parametrize("radial_basis", ["gaussian_shells", "smooth_finite", "gaussian_shells_half"])
def test_anisotropic_spacing_kernel_is_sized_in_mm_and_equivariant_to_its_grid_symmetries(float64_default,
                                                                                          radial_basis):
    conv = SteerableConv3d("1x0e + 1x1e", SO3_HIDDEN, kernel_size=5, spacing=(3.0, 1.0, 1.0),
                           radial_basis=radial_basis)
    assert conv.kernel_shape == (1, 5, 5), "radius 2.5 mm: one tap along the 3 mm axis"
    assert SteerableConv3d("1x0e", "1x0e", kernel_size=5, spacing=(2.0, 1.0, 1.0)).kernel_shape == (3, 5, 5)
    # symmetries of the (3, 1, 1) mm grid: those that map axis x to itself
    grid = [R for R in grid_rotations() if abs(R[0, 0]) == 1]
    assert len(grid) == 8
    x = torch.randn(1, conv.irreps_in.dim, 4, 6, 6)
    assert_equivariant(conv, x, grid, conv.irreps_in, conv.irreps_out, tol=1e-10)


def test_conv_output_has_unit_second_moment_at_init():
    torch.manual_seed(0)
    conv = SteerableConv3d("16x0e + 8x1e + 4x2e", "16x0e + 8x1e + 4x2e", kernel_size=5)
    y = conv(torch.randn(2, conv.irreps_in.dim, 14, 14, 14))[..., 2:-2, 2:-2, 2:-2]  # away from zero padding
    for b in blocks(conv.irreps_out):
        moment = y[:, b.start:b.stop].pow(2).mean().item()
        assert 0.75 < moment < 1.33, f"{b.ir}: second moment {moment:.3f} should be ~1 (component normalisation)"


def test_self_connection_is_the_centre_tap_and_radial_basis_vanishes_there(float64_default):
    """The paper's basis: smooth_finite radial functions vanish at the centre and beyond the radius."""
    conv = SteerableConv3d("2x1e", "3x1e", kernel_size=5, radial_basis="smooth_finite")
    kernel = conv.build_kernel()
    centre = kernel[:, :, 2, 2, 2].reshape(3, 3, 2, 3).permute(0, 2, 1, 3)  # (u_out, u_in, m_out, m_in)
    eye = torch.eye(3)
    assert torch.allclose(centre, centre[..., :1, :1] * eye, atol=1e-14), "centre tap is W (x) identity"
    no_self = SteerableConv3d("2x1e", "3x1e", kernel_size=5, self_connection=False,
                              radial_basis="smooth_finite").build_kernel()
    assert no_self[:, :, 2, 2, 2].abs().max() == 0
    corner = kernel[:, :, 0, 0, 0]
    assert corner.abs().max() == 0, "the kernel is a ball: corners beyond the radius are zero"


def test_gaussian_shells_cut_the_angular_order_per_radius(float64_default):
    """Shells at radii 0, 1, 2 voxels (5-voxel kernel): l = 0 on all three, l = 1 from radius 1, l = 2 only on
    the outermost; l > 0 elements vanish at the centre tap."""
    def n_elements(irreps_in, irreps_out, **kw):
        return SteerableConv3d(irreps_in, irreps_out, kernel_size=5, bias=False, radial_basis="gaussian_shells",
                               **kw).weight.numel()

    assert n_elements("1x0e", "1x0e") == 3 + 1, "3 shells + the self-connection"
    assert n_elements("1x0e", "1x1e") == 2 and n_elements("1x0e", "1x2e") == 1
    assert n_elements("1x0e", "1x0e", self_connection=False) == 3
    k3 = SteerableConv3d("1x0e", "1x2e", kernel_size=3, radial_basis="gaussian_shells")
    assert k3.weight.numel() == 1, "3-voxel kernel: the outermost shell (radius 1) carries l = 2"
    kernel = SteerableConv3d("1x1e", "2x1e + 1x2e", kernel_size=5, self_connection=False,
                             radial_basis="gaussian_shells").build_kernel()
    assert kernel[6:, :, 2, 2, 2].abs().max() < 1e-14, "no 1e -> 2e coupling at the centre (l = 1, 2 vanish there)"


def test_half_voxel_shells_resolve_more_radii_and_cut_the_order_per_radius(float64_default):
    """``gaussian_shells_half``, 5-voxel kernel: shells at 0, 1, 1.5, 2, 2.5 voxels; l = 0 on all five, l = 1
    from radius 1, l = 2 from radius 2 (the outermost, 2.5, among them); 3-voxel kernel: 0, 1, 1.5, the
    outermost carrying l = 2. Every element is a distinct direction (none dropped by Gram-Schmidt)."""
    def n_elements(irreps_out, kernel_size=5):
        return SteerableConv3d("1x0e", irreps_out, kernel_size=kernel_size, bias=False, self_connection=False,
                               radial_basis="gaussian_shells_half").weight.numel()

    assert [n_elements(o) for o in ("1x0e", "1x1e", "1x2e")] == [5, 4, 2]
    assert [n_elements(o, 3) for o in ("1x0e", "1x1e", "1x2e")] == [3, 2, 1]


def _anisotropic_blobs(points: torch.Tensor, seed: int, R: torch.Tensor) -> torch.Tensor:
    """A sum of anisotropic Gaussian blobs evaluated at ``R^T p``: the same smooth field in another pose,
    rendered without interpolation."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(points.shape[:-1])
    for _ in range(6):
        centre = 2.0 * torch.randn(3, generator=g)
        q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
        A = q @ torch.diag(1 / (1.5 + 2.5 * torch.rand(3, generator=g)) ** 2) @ q.T
        d = points @ R - centre
        out += torch.randn((), generator=g) * torch.exp(-0.5 * torch.einsum("...i,ij,...j->...", d, A, d))
    return out


def test_gaussian_shells_are_nearly_equivariant_off_the_grid(float64_default):
    """45 degrees about x: the output at the centre voxel of a smooth field rendered in both poses, against
    D(R) times the unrotated one (no interpolation anywhere). The paper's basis is far off for l >= 1."""
    from scipy.spatial.transform import Rotation

    from nnunet_equivariant.testing import irreps_D

    n = 9
    axis = torch.arange(n, dtype=torch.float64) - n // 2
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)
    R = torch.from_numpy(Rotation.from_euler("x", 45, degrees=True).as_matrix())
    errors = {}
    for radial_basis in ("gaussian_shells", "smooth_finite", "gaussian_shells_half"):
        torch.manual_seed(0)
        conv = SteerableConv3d("1x0e", "4x0e + 4x1e + 4x2e", kernel_size=5, radial_basis=radial_basis).eval()
        D = irreps_D(conv.irreps_out, R)
        num = den = 0
        for seed in range(8):
            y0, y1 = (conv(_anisotropic_blobs(points, seed, r)[None, None])[0, :, n // 2, n // 2, n // 2]
                      for r in (torch.eye(3), R))
            num, den = num + (D @ y0 - y1).pow(2), den + y1.pow(2)
        rel = (num / den).sqrt()
        errors[radial_basis] = [rel[:4].mean().item(), rel[4:16].mean().item(), rel[16:].mean().item()]
    assert max(errors["gaussian_shells"]) < 0.03, errors
    assert min(errors["smooth_finite"][1:]) > 0.1, errors
    # shells between the integer radii weight the lattice's face and body diagonals differently: more radial
    # resolution, less rotation consistency (a cubic anisotropy), on every order
    assert all(half > 3 * shells
               for half, shells in zip(errors["gaussian_shells_half"], errors["gaussian_shells"])), errors


def test_parameters_and_state_dict_hold_only_weights():
    conv = SteerableConv3d("1x0e", SO3_HIDDEN, bias=True)
    assert set(conv.state_dict()) == {"weight", "bias"}, "bases are non-persistent buffers"
    # the first radial function (centre r/6) has no voxel in its support at 1 mm: 4 radial elements per path
    scalar = SteerableConv3d("1x0e", "1x0e", kernel_size=5, radial_basis="smooth_finite")
    assert scalar.weight.numel() == 4 + 1, "4 effective radial functions + the self-connection"


def test_kernel_gradient_matches_autograd_reference(float64_default):
    conv = SteerableConv3d("1x0e + 1x1e", "1x0e + 2x1e + 1x2e", kernel_size=3)
    weight = conv.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda w: _KernelFromBasis.apply(w, conv._layout, *_bases(conv)), (weight,),
                                    fast_mode=True), "the custom backward matches finite differences"
    w = conv.weight.detach().clone().requires_grad_()
    g = torch.randn_like(conv.build_kernel())
    (conv.build_kernel() * g).sum().backward()
    (_reference_kernel(conv, w) * g).sum().backward()
    assert torch.allclose(conv.weight.grad, w.grad, atol=1e-12), "custom backward equals autograd's"


def test_training_convolution_matches_autograd_and_does_not_keep_the_kernel(float64_default):
    conv = SteerableConv3d("1x0e + 1x1e", SO3_HIDDEN, kernel_size=5, bias=True)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 4, 6, 7, 5, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        out = conv(x)
    kernel = conv.build_kernel()
    assert tuple(kernel.shape) not in saved, "the kernel is re-assembled in backward, not kept"
    reference = F.conv3d(x, kernel, conv._full_bias(), padding=2)
    assert torch.allclose(out, reference, rtol=0, atol=1e-13)
    g = torch.randn_like(out)
    params = (x, conv.weight, conv.bias)
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(reference, params, g)):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def _bases(conv):
    return [getattr(conv, name) for name in conv._basis_names]


def _reference_kernel(conv, weight):
    """Plain-autograd kernel from the same bases, for checking the custom Function."""
    rows = []
    for bo in blocks(conv.irreps_out):
        cols = []
        for bi in blocks(conv.irreps_in):
            path = [p for p in conv._paths if p.out == bo and p.inp == bi]
            if not path:
                cols.append(weight.new_zeros(bo.dim, bi.dim, *conv.kernel_shape))
                continue
            p = path[0]
            basis = _bases(conv)[p.basis]
            blk = weight[p.weights].view(bo.mul, bi.mul, p.n) @ basis
            blk = blk.view(bo.mul, bi.mul, bo.d, bi.d, -1).transpose(1, 2)
            cols.append(blk.reshape(bo.dim, bi.dim, *conv.kernel_shape))
        rows.append(torch.cat(cols, 1))
    return torch.cat(rows, 0)


def test_eval_kernel_cache_is_bit_identical_and_invalidated_by_weight_changes():
    torch.manual_seed(0)
    conv = SteerableConv3d("1x0e + 1x1e", SO3_HIDDEN, kernel_size=5)
    x = torch.randn(1, 4, 8, 8, 8)
    conv.eval()
    with torch.no_grad():
        first = conv(x)
        cached = conv._cache[1]
        assert conv(x).equal(first) and conv._cache[1] is cached, "second eval forward reuses the kernel"
        assert first.equal(F.conv3d(x, conv.build_kernel(), conv._full_bias(), padding=2)), "cache == uncached"

    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1)
    conv.train()
    conv(x).square().mean().backward()
    optimizer.step()
    conv.eval()
    with torch.no_grad():
        after_step = conv(x)
    assert not after_step.equal(first), "an optimizer step invalidates the cached kernel"
    with torch.no_grad():  # the new weights are used: equal to the uncached convolution up to float32 rounding
        # (measured 2.4e-7 of 3.9 with torch 2.14's oneDNN; bit identity holds for the unchanged cache above)
        uncached = F.conv3d(x, conv.build_kernel(), conv._full_bias(), padding=2)
        torch.testing.assert_close(after_step, uncached, rtol=1e-6, atol=1e-6 * float(uncached.abs().max()))

    with torch.no_grad():
        conv(x)  # cache the stepped weights, then load different ones while staying in eval mode
        conv.weight.add_(0)  # an in-place update also bumps the version counter
    other = SteerableConv3d("1x0e + 1x1e", SO3_HIDDEN, kernel_size=5)
    conv.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert conv(x).equal(other.eval()(x)), "load_state_dict invalidates the cached kernel"


def test_eval_with_autograd_builds_a_differentiable_kernel():
    conv = SteerableConv3d("1x0e", SO3_HIDDEN).eval()
    conv(torch.randn(1, 1, 6, 6, 6)).sum().backward()
    assert conv.weight.grad is not None and conv._cache is None, "no cache (and gradients) when grad is enabled"


def test_conv_runs_under_cpu_autocast_and_caches_a_float32_kernel():
    conv = SteerableConv3d("1x0e", SO3_HIDDEN)
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
        loss = y.float().square().mean()
    loss.backward()
    assert y.dtype == torch.bfloat16 and torch.isfinite(conv.weight.grad).all()
    conv.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        conv(x)
    assert conv._cache[1].dtype == torch.float32
    with torch.no_grad():
        assert conv(x).dtype == torch.float32, "the same cached kernel serves a float32 forward"


def test_block_compiles_without_graph_breaks_and_matches_eager():
    from nnunet_equivariant.layers import SteerableBlock

    torch.manual_seed(0)
    block = SteerableBlock("1x0e + 1x1e", SO3_HIDDEN, 5, (1.0, 1.0, 1.0), False, 5, 2, "leaky_relu", "gaussian_shells")
    twin = copy.deepcopy(block)
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break fails
    x = torch.randn(2, 4, 8, 8, 8)
    eager_out, compiled_out = block(x), compiled(x)
    eager_out.square().mean().backward()
    compiled_out.square().mean().backward()
    assert torch.allclose(eager_out, compiled_out, atol=1e-5)  # float32: compiled op order rounds differently
    grads = dict(twin.named_parameters())
    for name, p in block.named_parameters():
        assert torch.allclose(p.grad, grads[name].grad, atol=1e-5), name  # float32, as above


@pytest.mark.parametrize("irreps_out", ["2x0e", "2x0e + 2x1e", SO3_HIDDEN])  # 1, 2 and 3 kernel bases
def test_compiled_eval_conv_traces_whole_and_matches_the_cached_kernel(irreps_out):
    """The eval (no-grad) forward under ``torch.compile`` builds no autograd node: with exactly two basis
    tensors, dynamo (torch 2.14) bound ``_ConvFromBasis``'s arguments wrongly there and fell back to eager
    frames (18 graph breaks in ``nnUNetTrainerE3nn_8x8x0``'s network)."""
    torch.manual_seed(0)
    conv = SteerableConv3d("1x0e", irreps_out, 5, (1.0, 1.0, 1.0), 5, 2, bias=False).eval()
    x = torch.randn(2, 1, 8, 8, 8)
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = torch.compile(conv, backend="eager", fullgraph=True)(x)  # fullgraph: a graph break fails
        eager = conv(x)  # the cached kernel
    assert torch.allclose(compiled, eager, atol=1e-6)


@pytest.mark.parametrize("activation", ["leaky_relu", "relu"])
def test_fused_norm_gate_equals_the_composition(float64_default, activation):
    gate = EquivariantGate("3x0e", "2x1e + 1x2e + 1x1e", activation)
    norm = _randomise(EquivariantInstanceNorm(gate.irreps_in))
    layout = norm_gate_layout(norm, gate)
    x = torch.randn(2, gate.irreps_in.dim, 4, 5, 3, requires_grad=True)
    x.data[0, -3:, 0, 0, 0] = 0  # a zero vector: finite gradients
    params = (x, norm.weight, norm.bias)
    reference = gate(norm(x))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        fused = norm_gate(*params, layout)
    assert sum(n >= x.numel() for n in saved) == 1, "the fused node keeps only its input, no normalised copy"
    assert torch.allclose(fused, reference, rtol=0, atol=1e-13)
    g = torch.randn_like(reference)
    for a, b in zip(torch.autograd.grad(fused, params, g), torch.autograd.grad(reference, params, g)):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), "closed-form backward equals autograd's"
    assert torch.autograd.gradcheck(lambda *p: norm_gate(*p, layout), params, fast_mode=True)
    assert norm_gate_layout(EquivariantInstanceNorm("1x0e + 1x0o + 1x0e + 1x1e"),
                            EquivariantGate("1x0e + 1x0o", "1x1e")) is None, "odd scalars use the composition"


def test_block_under_cpu_autocast():
    from nnunet_equivariant.layers import SteerableBlock

    torch.manual_seed(0)
    block = SteerableBlock("1x0e", SO3_HIDDEN, 5, (1.0, 1.0, 1.0), False, 5, 2, "leaky_relu", "gaussian_shells")
    x = torch.randn(2, 1, 8, 8, 8)
    reference = block(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
    y.float().square().mean().backward()
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), reference, atol=0.1, rtol=0.05), "bfloat16 result close to float32"
    assert all(torch.isfinite(p.grad).all() for p in block.parameters())


@pytest.mark.parametrize("symmetries, irreps, kwargs", [
    ("rot", "2x0e + 1x1e + 1x2e", {}),
    ("all", "2x0e + 1x0o + 1x1o + 1x2e", {}),
    ("all", "1x0e + 1x1o", {"scalar_activation": "silu"}),
])
def test_gate_is_equivariant(float64_default, symmetries, irreps, kwargs):
    irreps = o3.Irreps(irreps)
    gate = EquivariantGate([(m, ir) for m, ir in irreps if ir.l == 0], [(m, ir) for m, ir in irreps if ir.l > 0],
                           **kwargs)
    assert gate.irreps_out == irreps and gate.irreps_in.dim == irreps.dim + irreps.count((1, 1)) \
        + irreps.count((1, -1)) + irreps.count((2, 1))
    x = torch.randn(2, gate.irreps_in.dim, 5, 6, 7)
    syms = grid_rotations() if symmetries == "rot" else grid_symmetries()
    assert_equivariant(gate, x, syms, gate.irreps_in, gate.irreps_out, tol=1e-10)


def test_norm_is_equivariant_and_normalises(float64_default):
    irreps = o3.Irreps(O3_MIXED)
    norm = _randomise(EquivariantInstanceNorm(irreps))
    x = 3 * torch.randn(2, irreps.dim, 5, 6, 7) + 1
    assert_equivariant(norm, x, grid_symmetries(), irreps, irreps, tol=1e-10)

    y = EquivariantInstanceNorm(irreps)(x)  # identity affine
    scalars = y[:, :2]
    assert torch.allclose(scalars.mean((2, 3, 4)), torch.zeros(2, 2), atol=1e-10)
    assert torch.allclose(scalars.var((2, 3, 4), unbiased=False), torch.ones(2, 2), atol=1e-4)
    for b in blocks(irreps)[1:]:
        v = y[:, b.start:b.stop].unflatten(1, (b.mul, b.d))
        mean_norm = v.norm(dim=2).mean((2, 3, 4))
        assert torch.allclose(mean_norm, torch.ones_like(mean_norm), atol=1e-4), f"{b.ir}: mean norm 1"
    assert len(list(EquivariantInstanceNorm(irreps).parameters())) == 2
    assert EquivariantInstanceNorm(irreps).weight.numel() == irreps.num_irreps
    assert EquivariantInstanceNorm(irreps).bias.numel() == 2, "bias only on 0e"


def test_norm_has_finite_gradients_for_zero_vectors():
    norm = EquivariantInstanceNorm("1x0e + 1x1e")
    x = torch.zeros(1, 4, 4, 4, 4, requires_grad=True)
    norm(x).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("stride", [(2, 2, 2), (1, 2, 2)])
def test_pool_is_equivariant_and_pools_vectors_by_norm(float64_default, stride):
    irreps = o3.Irreps(O3_MIXED)
    pool = NormMaxPool3d(irreps, stride)
    x = torch.randn(2, irreps.dim, 4, 6, 6)
    syms = grid_symmetries() if stride == (2, 2, 2) else [R for R in grid_symmetries() if abs(R[0, 0]) == 1]
    assert_equivariant(pool, x, syms, irreps, irreps, tol=1e-10)
    y = pool(x)
    vec = blocks(irreps)[2]  # 1x1o
    v = x[:, vec.start:vec.stop].unflatten(2, (x.shape[2] // stride[0], stride[0]))
    v = v.unflatten(4, (3, 2)).unflatten(6, (3, 2))  # (b, 3, X, sx, Y, 2, Z, 2)
    norms = v.norm(dim=1)
    expected_norm = norms.amax(dim=(2, 4, 6))
    assert torch.allclose(y[:, vec.start:vec.stop].norm(dim=1), expected_norm), "keeps the vector of largest norm"


def test_pool_gathers_each_samples_own_vectors():
    """The reference implementation's bug: batch > 1 took every sample's vectors from the first one."""
    pool = NormMaxPool3d("2x0e + 3x1e + 1x2e + 1x0o", 2)
    x = torch.randn(2, 2 + 9 + 5 + 1, 8, 8, 8)
    together = pool(x)
    one_by_one = torch.cat([pool(x[i:i + 1]) for i in range(2)])
    assert together.equal(one_by_one), "a batch of 2 equals pooling each sample alone"


@pytest.mark.parametrize("stride", [(2, 2, 2), (1, 2, 2)])
def test_mean_pool_is_equivariant_and_averages_every_component(float64_default, stride):
    """All 48 symmetries (isotropic stride) or those of the (1, 2, 2) grid, alone and after the anti-aliasing
    blur; the output is each window's mean of every component (0o and l > 0 alike), a linear map."""
    irreps = o3.Irreps(O3_MIXED)
    pool = MeanPool3d(irreps, stride)
    x = torch.randn(2, irreps.dim, 4, 6, 6)
    syms = grid_symmetries() if stride == (2, 2, 2) else [R for R in grid_symmetries() if abs(R[0, 0]) == 1]
    assert len(syms) == (48 if stride == (2, 2, 2) else 16)
    assert_equivariant(pool, x, syms, irreps, irreps, tol=1e-10)
    blur = GaussianBlur3d([0.5 * s if s > 1 else 0.0 for s in stride])
    assert_equivariant(torch.nn.Sequential(blur, pool), x, syms, irreps, irreps, tol=1e-10)
    windows = x.unflatten(2, (4 // stride[0], stride[0])).unflatten(4, (3, 2)).unflatten(6, (3, 2))
    assert torch.allclose(pool(x), windows.mean(dim=(3, 5, 7)))
    y = torch.randn_like(x)
    assert torch.allclose(pool(2 * x - y), 2 * pool(x) - pool(y)), "linear"


def test_mean_pool_is_continuous_where_the_norm_max_jumps(float64_default):
    """Two vectors of almost equal norm in one window: a tiny change of one swaps the norm max's choice
    (a jump as large as the vectors), while the mean moves as little as the input."""
    x = torch.zeros(1, 3, 2, 2, 2)
    x[0, :, 0, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    x[0, :, 1, 1, 1] = torch.tensor([0.0, 1.0 - 1e-9, 0.0])
    nudged = x.clone()
    nudged[0, 1, 1, 1, 1] += 2e-9
    norm_max, mean = NormMaxPool3d("1x1e", 2), make_pool("mean", "1x1e", 2)
    assert (norm_max(nudged) - norm_max(x)).norm() > 1.0
    assert (mean(nudged) - mean(x)).norm() < 1e-9


def test_mean_pool_saves_no_more_for_backward_than_the_norm_max():
    """The planner counts both poolings alike (their output): autograd keeps the input of both, the norm
    max its int64 indices as well."""
    def saved_bytes(pool):
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        x = torch.randn(1, 30, 8, 8, 8, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            pool(x * 1.0)
        return sum(storages.values())

    irreps = "8x0e + 4x1e + 2x2e"
    mean, norm_max = saved_bytes(MeanPool3d(irreps, 2)), saved_bytes(NormMaxPool3d(irreps, 2))
    assert mean == 30 * 8 ** 3 * 4 < norm_max, "the mean keeps its input only"


def test_upsample_is_equivariant(float64_default):
    irreps = o3.Irreps(SO3_HIDDEN)
    up = TrilinearUpsample(2)
    assert_equivariant(up, torch.randn(1, irreps.dim, 3, 4, 5), grid_rotations(), irreps, irreps, tol=1e-10)
    assert up(torch.randn(1, 2, 3, 4, 5)).shape == (1, 2, 6, 8, 10)
    assert TrilinearUpsample((1, 2, 2))(torch.randn(1, 1, 3, 4, 5)).shape == (1, 1, 3, 8, 10)


@pytest.mark.parametrize("sigma, stride", [(1.0, (2, 2, 2)), ((0.0, 1.0, 1.0), (1, 2, 2))])
def test_blur_is_equivariant_and_keeps_constants(float64_default, sigma, stride):
    irreps = o3.Irreps(O3_MIXED)
    blur = GaussianBlur3d(sigma)
    syms = grid_symmetries() if stride == (2, 2, 2) else [R for R in grid_symmetries() if abs(R[0, 0]) == 1]
    x = torch.randn(2, irreps.dim, 4, 6, 6)
    assert_equivariant(blur, x, syms, irreps, irreps, tol=1e-10)
    assert_equivariant(torch.nn.Sequential(blur, NormMaxPool3d(irreps, stride)), x, syms, irreps, irreps, tol=1e-10)
    constant = torch.full((1, 3, 5, 6, 7), 2.5)
    assert torch.allclose(blur(constant), constant), "normalised taps and replicated borders keep constants"
    if sigma == 1.0:
        assert blur(torch.randn(1, 1, 16, 16, 16)).std() < 0.3, "a low-pass: white noise loses most of its power"
    with pytest.raises(ValueError, match="sigma must be"):
        GaussianBlur3d((1.0, -1.0, 1.0))


@pytest.mark.parametrize("sigma", [1.0, (0.0, 0.7, 1.4)])
def test_blur_is_scipys_gaussian_filter(float64_default, sigma):
    """The documented filter: a sampled Gaussian of ``ceil(3 sigma)`` taps either side, normalised, with
    replicated borders, is scipy's ``gaussian_filter`` (``mode="nearest"``, that ``radius``) per channel; 0
    leaves an axis."""
    from scipy.ndimage import gaussian_filter

    x = torch.randn(2, 3, 5, 9, 12)
    sigmas = (sigma,) * 3 if isinstance(sigma, float) else sigma
    radius = [0, 0, *(math.ceil(3 * s) for s in sigmas)]
    expected = gaussian_filter(x.numpy(), sigma=(0, 0, *sigmas), mode="nearest", radius=radius)
    assert torch.allclose(GaussianBlur3d(sigma)(x), torch.from_numpy(expected), atol=1e-12)


def test_deliberately_broken_ops_are_caught(float64_default):
    """The tests above can fail: non-equivariant versions of the same ops do not pass."""
    irreps = o3.Irreps(SO3_HIDDEN)
    x = torch.randn(2, irreps.dim, 4, 4, 4)

    def componentwise_pool(v):  # pools vector components independently (by value)
        return F.max_pool3d(v, 2)

    def componentwise_gate(v):  # an activation applied to vector components
        return F.leaky_relu(v, 0.01)

    pool = NormMaxPool3d(irreps, 2)

    def padded_pool(v):  # one-sided padding to a divisible size, as the reference implementation does
        return pool(F.pad(v, (1, 0, 1, 0, 1, 0)))

    for f, inp in [(componentwise_pool, x), (componentwise_gate, x), (padded_pool, x[..., 1:, 1:, 1:])]:
        with pytest.raises(AssertionError, match="does not transform"):
            assert_equivariant(f, inp, grid_rotations()[:6], irreps, irreps, tol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(irreps_in="8x0e + 4x1q", irreps_out="1x0e"), "irreps_in: invalid irreps '8x0e \\+ 4x1q'"),
    (dict(irreps_in="1x0e", irreps_out="garbage"), "irreps_out: invalid irreps 'garbage'"),
    (dict(irreps_in="", irreps_out="1x0e"), "irreps_in: irreps '' have no channels"),
    (dict(irreps_in="1x0e", irreps_out="1x1o"), "holds odd irreps"),
    (dict(irreps_in="1x0e", irreps_out="1x0e", kernel_size=4),
     r"kernel_size must be an odd positive integer \(a centred kernel\), got 4"),
    (dict(irreps_in="1x0e", irreps_out="1x0e", kernel_size=1, self_connection=False), "kernel_size=1 cannot hold"),
    (dict(irreps_in="1x0e", irreps_out="1x1e", kernel_size=1), "no equivariant path reaches output irrep 1e"),
    (dict(irreps_in="1x0e", irreps_out="1x2e", lmax=1), "no equivariant path reaches output irrep 2e"),
    (dict(irreps_in="1x0e", irreps_out="1x0o", parity=True), "no equivariant path reaches output irrep 0o"),
    (dict(irreps_in="1x0e", irreps_out="1x0e", spacing=(1.0, 0.0, 1.0)), "spacing must be three positive"),
])
def test_conv_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SteerableConv3d(**kwargs)


def test_layers_reject_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="irreps_gated must hold only l > 0"):
        EquivariantGate("1x0e", "1x0e")
    with pytest.raises(ValueError, match="scalar_activation must be one of"):
        EquivariantGate("1x0e", "1x1e", scalar_activation="gelu")
    with pytest.raises(ValueError, match="not divisible by the pooling stride"):
        NormMaxPool3d("1x1e", 2)(torch.randn(1, 3, 4, 5, 4))
    with pytest.raises(ValueError, match="expected input \\(batch, 4, x, y, z\\) for irreps 1x0e\\+1x1e"):
        SteerableConv3d("1x0e + 1x1e", "1x0e")(torch.randn(1, 3, 4, 4, 4))
    with pytest.raises(ValueError, match="stride must be"):
        NormMaxPool3d("1x0e", (2, 2))
    with pytest.raises(ValueError, match="not divisible by the pooling stride"):
        MeanPool3d("1x1e", 2)(torch.randn(1, 3, 4, 5, 4))
    with pytest.raises(ValueError, match="stride must be .* got \\(0, 2, 2\\)"):
        MeanPool3d("1x0e", (0, 2, 2))
    with pytest.raises(ValueError, match="pooling must be one of \\['norm_max', 'mean'\\], got 'avg'"):
        make_pool("avg", "1x0e", 2)
    with pytest.raises(ValueError, match="radial_basis must be one of"):
        SteerableConv3d("1x0e", "1x0e", radial_basis="bessel")


def test_invariant_head_is_invariant_under_every_rotation_and_reflection(float64_default):
    """Pointwise, so any O(3) matrix (not only the grid's) acting on the irreps leaves the logits unchanged;
    the head reads the 0e channels as they are and every other copy (0o, l > 0) by its norm, so the vectors
    and tensors reach the logits, which a head on the 0e channels alone does not let them do."""
    irreps = o3.Irreps(O3_MIXED)
    head = _randomise(InvariantHead(irreps, 3))
    assert head.n_invariants == 7 and head.irreps_out == o3.Irreps("3x0e")
    x = torch.randn(2, irreps.dim, 3, 4, 5)
    torch.manual_seed(1)
    for _ in range(5):
        R = o3.rand_matrix(dtype=torch.float64) * (-1) ** torch.randint(2, ()).item()  # rotations and reflections
        rotated = torch.einsum("ij,bj...->bi...", irreps_D(irreps, R), x)
        assert torch.allclose(head(rotated), head(x), atol=1e-12), "logits are invariant"
    expected = torch.cat([x[:, :2], x[:, 2:3].abs(), x[:, 3:6].norm(dim=1, keepdim=True),
                          x[:, 6:9].norm(dim=1, keepdim=True), x[:, 9:14].norm(dim=1, keepdim=True),
                          x[:, 14:19].norm(dim=1, keepdim=True)], dim=1)
    assert torch.allclose(head.invariants(x), expected), "0e as is, then one norm per copy"
    assert torch.allclose(head(x), F.conv3d(expected, head.weight, head.bias))
    x.requires_grad_(True)
    head(x).sum().backward()
    assert x.grad[:, 3:].abs().amax() > 0, "the odd scalars, vectors and tensors reach the logits"
    assert torch.isfinite(InvariantHead("1x1e", 1)(torch.zeros(1, 3, 1, 1, 1, requires_grad=True))).all()


def test_invariant_head_rejects_bad_arguments_and_zero_copies_have_finite_gradients():
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        InvariantHead("1x0e", 0)
    with pytest.raises(ValueError, match="irreps_in: invalid irreps 'vectors'"):
        InvariantHead("vectors", 2)
    x = torch.zeros(1, 4, 2, 2, 2, requires_grad=True)  # 1x0e + 1x1e, all zero
    InvariantHead("1x0e + 1x1e", 2)(x).sum().backward()
    assert torch.isfinite(x.grad).all(), "the norm's gradient at a zero vector is finite"
