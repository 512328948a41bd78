"""SO(3)/O(3)-steerable voxel convolution with a precomputed kernel basis and an eval-time kernel cache."""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import torch
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from torch import nn

from . import _fft_conv
from ._irreps import Block, blocks, check_field, parse_irreps

__all__ = ["SteerableConv3d", "kernel_lattice", "RADIAL_BASES", "DEFAULT_RADIAL_BASIS"]

# Elements of a kernel basis whose part orthogonal to the earlier elements is below this fraction of the
# largest element are dropped (radial functions with no lattice point in their support, or dependent ones).
_BASIS_RTOL = 1e-6


def kernel_lattice(kernel_size: int, spacing: Sequence[float]) -> tuple[tuple[int, int, int], torch.Tensor, float]:
    """Voxel offsets of a kernel of ``kernel_size`` voxels along the finest axis, in millimetres.

    The kernel is a ball of radius ``r = kernel_size / 2 * min(spacing)``; axis ``a`` gets
    ``2 * floor(r / spacing[a]) + 1`` taps, so a coarse axis gets fewer taps and isotropic spacing gives
    ``kernel_size`` taps per axis. Returns ``(taps, points, r)`` with ``points`` of shape ``(prod(taps), 3)``
    (float64, x-major like a ``conv3d`` weight's last three dims).
    """
    radius = kernel_size / 2 * min(spacing)
    half = [int(math.floor(radius / s + 1e-9)) for s in spacing]
    axes = [torch.arange(-h, h + 1, dtype=torch.float64) * s for h, s in zip(half, spacing)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    return tuple(2 * h + 1 for h in half), points, radius


def _orthonormalise(elements: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gram-Schmidt in the given order (deterministic, unlike an SVD), dropping negligible directions."""
    if not elements:
        return []
    scale = max(float(e.norm()) for e in elements)
    basis: list[torch.Tensor] = []
    for e in elements:
        v = e.clone()
        for _ in range(2):  # re-orthogonalise once for float64-exact orthogonality
            for b in basis:
                v -= (v * b).sum() * b
        norm = float(v.norm())
        if norm > _BASIS_RTOL * scale:
            basis.append(v / norm)
    return basis


RADIAL_BASES = ("smooth_finite", "gaussian_shells", "gaussian_shells_half")
# The default is the band-limited shells (docs/offgrid.md): the paper's basis leaves 20-200 % error on the
# l >= 1 outputs of a convolution at 45 degrees, the shells 0.2-1.2 %; trained in one pose on
# benchmarks/offgrid_training.py (10 test subjects), the shells kept every structure's Dice within 0.02 of
# 0 degrees at every angle where the paper's basis lost 0.10-0.14 on the thin ones, at the same mean Dice
# at 0 degrees. The paper's basis stays selectable (nnUNetTrainerE3nnPaperBasis).
DEFAULT_RADIAL_BASIS = "gaussian_shells"

# Gaussian shells: width (standard deviation, fraction of the finest voxel size) and the highest
# spherical-harmonic order a shell of radius k voxels carries. A shell holds few lattice points (6 at
# radius 1: an l = 2 harmonic sampled there has only its (3z^2 - r^2, x^2 - y^2) part, not xy, yz, zx), so
# angular detail finer than the points' spacing is sampled inconsistently off the grid: the centre carries
# l = 0 only (as in Weiler et al. 2018 and escnn's 3D bases) and l grows with the radius. The width 0.45 was
# chosen on the analytic off-grid test of tests/test_steerable_layers.py (45 degrees, 5-voxel kernels:
# widths 0.4 / 0.42 / 0.45 / 0.5 / 0.6 leave 2.8 / 1.3 / 1.2 / 4.6 / 10 % error on l = 2 outputs).
SHELL_WIDTH = 0.45
SHELL_MAX_L = (0, 1, 2)


def _radial_profiles(dist: torch.Tensor, radius: float, unit: float, num_radial_basis: int, lmax: int,
                     radial_basis: str) -> list[tuple[torch.Tensor, int]]:
    """Radial functions at the distances ``dist`` (mm) and the highest order ``l`` each one carries.

    - ``"smooth_finite"`` (the paper's): ``num_radial_basis`` of e3nn's ``smooth_finite`` functions evenly
      spaced in ``[0, radius]`` with a cutoff at ``radius``; each carries every ``l <= lmax``.
    - ``"gaussian_shells"``: band-limited shells ``exp(-(|r| - k u)^2 / (2 (SHELL_WIDTH u)^2))`` at the radii the
      lattice resolves, ``k = 0 .. floor(radius / u)`` with ``u`` the finest voxel size; shell ``k`` carries
      ``l <= min(lmax, SHELL_MAX_L[k])`` (the last entry for larger ``k``), the outermost shell every
      ``l <= lmax`` (so a 3-voxel kernel still maps scalars to ``l = 2``). ``num_radial_basis`` is unused.
    - ``"gaussian_shells_half"``: the same shells (same width) at more radii: 0, then every half voxel from 1
      to the kernel radius (0, 1, 1.5, 2, 2.5 for a 5-voxel kernel; 0, 1, 1.5 for a 3-voxel one), so the
      radial profile of each order is resolved between the integer radii (the lattice's radii sqrt(2),
      sqrt(3), sqrt(5), sqrt(6) lie there). Radius 0 carries ``l = 0``, radii 1 and 1.5 ``l <= 1``, radii
      >= 2 ``l <= lmax`` (the outermost always ``l <= lmax``). ``num_radial_basis`` is unused. An option for
      the off-grid benchmarks, not a default: between the integer radii a shell weights the lattice's face
      and body diagonals differently, a cubic anisotropy (45 degrees, 5-voxel kernel: 4 % error on l = 0
      outputs, 19 % on l = 2, against the shells' 0.2 % and 1.3 %; docs/offgrid_real_anatomy.md).
    """
    if radial_basis == "smooth_finite":
        radial = soft_one_hot_linspace(dist, 0.0, radius, num_radial_basis, basis="smooth_finite", cutoff=True)
        return [(radial[:, s], lmax) for s in range(num_radial_basis)]
    if radial_basis == "gaussian_shells":
        n_shells = int(math.floor(radius / unit + 1e-9)) + 1
        return [(torch.exp(-0.5 * ((dist - k * unit) / (SHELL_WIDTH * unit)) ** 2),
                 lmax if k == n_shells - 1 else min(lmax, SHELL_MAX_L[min(k, len(SHELL_MAX_L) - 1)]))
                for k in range(n_shells)]
    if radial_basis == "gaussian_shells_half":
        radii = [0.0] + [k / 2 for k in range(2, int(math.floor(2 * radius / unit + 1e-9)) + 1)]
        return [(torch.exp(-0.5 * ((dist - r * unit) / (SHELL_WIDTH * unit)) ** 2),
                 lmax if r == radii[-1] else 0 if r == 0 else min(lmax, 1) if r < 2 else lmax) for r in radii]
    raise ValueError(f"radial_basis must be one of {RADIAL_BASES}, got {radial_basis!r}")


@functools.lru_cache(maxsize=None)
def _pair_basis(ir_in: o3.Irrep, ir_out: o3.Irrep, kernel_size: int, spacing: tuple[float, float, float],
                num_radial_basis: int, lmax: int, parity: bool, self_connection: bool,
                radial_basis: str = DEFAULT_RADIAL_BASIS) -> torch.Tensor:
    """Orthonormal basis ``(P, d_out, d_in, T)`` (float64) of equivariant kernels from ``ir_in`` to ``ir_out``.

    Elements, in order: the self-connection (identity at the centre tap, if ``ir_in == ir_out``), then for
    each spherical-harmonic order ``l`` allowed by the selection rule (and parity) and each radial function
    ``s`` that carries ``l`` (see ``_radial_profiles``): ``radial_s(|r|) * sum_m w3j[m_in, m, m_out] *
    Y^l_m(r / |r|)`` (``Y^l(0) = 0`` for ``l > 0``). Orthonormalised with Gram-Schmidt in the Frobenius
    inner product: a linear change of basis of the same kernel space (plus dropping directions the lattice
    cannot represent), so weights are an isometry onto the kernel space.
    """
    _, points, radius = kernel_lattice(kernel_size, spacing)
    n_taps = points.shape[0]
    profiles = _radial_profiles(points.norm(dim=-1), radius, min(spacing), num_radial_basis, lmax, radial_basis)
    elements = []
    if self_connection and ir_in == ir_out:
        centre = torch.zeros(n_taps, dtype=torch.float64)
        centre[n_taps // 2] = 1.0
        elements.append(torch.einsum("oi,t->oit", torch.eye(ir_out.dim, dtype=torch.float64), centre))
    for l in range(lmax + 1):  # noqa: E741 (spherical-harmonic order)
        if not abs(ir_in.l - ir_out.l) <= l <= ir_in.l + ir_out.l:
            continue
        if parity and ir_in.p * (-1) ** l != ir_out.p:
            continue
        sh = o3.spherical_harmonics(l, points, normalize=True, normalization="component")  # (T, 2l+1)
        w3j = o3.wigner_3j(ir_in.l, l, ir_out.l, dtype=torch.float64)  # (d_in, 2l+1, d_out)
        angular = torch.einsum("imo,tm->oit", w3j, sh)
        elements += [angular * radial for radial, l_max in profiles if l <= l_max]
    basis = _orthonormalise(elements)
    if not basis:
        return torch.zeros(0, ir_out.dim, ir_in.dim, n_taps, dtype=torch.float64)
    return torch.stack(basis)


class _Path(NamedTuple):
    """Kernel block from input block ``inp`` to output block ``out``: weights ``(out.mul, inp.mul, n)``
    at ``offset`` in the flat weight, basis ``(n, out.d * inp.d * taps)`` number ``basis``."""

    out: Block
    inp: Block
    offset: int
    n: int
    basis: int

    @property
    def weights(self) -> slice:
        return slice(self.offset, self.offset + self.out.mul * self.inp.mul * self.n)


class _KernelLayout(NamedTuple):
    paths: tuple[_Path, ...]
    dim_out: int
    dim_in: int
    taps: tuple[int, int, int]
    dense: bool  # every (output block, input block) pair has a path: no entry stays zero

    @property
    def padding(self) -> tuple[int, int, int]:
        return tuple(t // 2 for t in self.taps)


def _assemble(weight: torch.Tensor, layout: _KernelLayout, bases: Sequence[torch.Tensor]) -> torch.Tensor:
    """The ``(C_out, C_in, *taps)`` kernel: ``kernel[(u, i), (v, j), t] = sum_k w[u, v, k] B[k, i, j, t]``
    for every path (e3nn's copy-major layout), in the weights' dtype. No autograd inside."""
    n_taps = math.prod(layout.taps)
    shape = (layout.dim_out, layout.dim_in, n_taps)
    kernel = weight.new_empty(shape) if layout.dense else weight.new_zeros(shape)
    for p in layout.paths:
        w = weight[p.weights].view(p.out.mul * p.inp.mul, p.n)
        block = (w @ bases[p.basis]).view(p.out.mul, p.inp.mul, p.out.d, p.inp.d, n_taps)
        _block_view(kernel, p).copy_(block.transpose(1, 2))
    return kernel.view(layout.dim_out, layout.dim_in, *layout.taps)


def _weight_gradient(grad_kernel: torch.Tensor, layout: _KernelLayout, bases: Sequence[torch.Tensor]) -> torch.Tensor:
    """The flat weight gradient from a kernel gradient: each path's block, read through a view."""
    grad_kernel = grad_kernel.reshape(layout.dim_out, layout.dim_in, -1)
    grads = []
    for p in layout.paths:
        g = _block_view(grad_kernel, p).transpose(1, 2).reshape(p.out.mul * p.inp.mul, -1)
        grads.append((g @ bases[p.basis].t()).flatten())
    return torch.cat(grads)


class _KernelFromBasis(torch.autograd.Function):
    """The assembled kernel as one autograd node (autograd through the slice assignments would copy the
    whole kernel once per path in the backward pass). Runs outside autocast, in the weights' dtype."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, layout: _KernelLayout, *bases: torch.Tensor) -> torch.Tensor:
        ctx.layout = layout
        ctx.save_for_backward(*bases)
        with torch.autocast(weight.device.type, enabled=False):
            return _assemble(weight, layout, bases)

    @staticmethod
    def backward(ctx, grad_kernel: torch.Tensor):
        bases = ctx.saved_tensors
        with torch.autocast(grad_kernel.device.type, enabled=False):
            return (_weight_gradient(grad_kernel, ctx.layout, bases), None, *([None] * len(bases)))


def _convolve(x: torch.Tensor, weight: torch.Tensor, layout: _KernelLayout, bases: Sequence[torch.Tensor]):
    """``(x in the convolution's dtype, conv3d(x, kernel))``: the kernel assembled in the weights' dtype and
    the convolution run in autocast's dtype when autocast is on (as ``F.conv3d`` would), else in x's."""
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    with torch.autocast(device, enabled=False):
        x = x.to(dtype)
        # --- fast-path hook: conv3d or tiled FFT, chosen per shape by measurement (layers/_fft_conv.py)
        return x, _fft_conv.conv3d(x, _assemble(weight, layout, bases).to(dtype))


class _ConvFromBasis(torch.autograd.Function):
    """``F.conv3d(x, kernel)`` with the kernel assembled from the weights, for training. The backward pass
    assembles the kernel again instead of keeping it: a kernel is as large as a plain convolution's weight,
    and keeping every layer's kernel from forward to backward would add a plain network's worth of weights
    to the activation memory; assembling costs a few matrix products with ~10 rows.

    Under autocast the convolution runs in autocast's dtype (as ``F.conv3d`` would); the kernel is assembled
    in the weights' dtype and cast. Forward and backward convolutions run directly or as tiled FFTs, chosen
    per shape by measurement (``layers/_fft_conv.py``; same numbers to float tolerance)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, layout: _KernelLayout, *bases: torch.Tensor):
        ctx.input_dtype = x.dtype
        x, out = _convolve(x, weight, layout, bases)
        ctx.layout = layout
        ctx.save_for_backward(x, weight, *bases)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, *bases = ctx.saved_tensors
        layout = ctx.layout
        with torch.autocast(x.device.type, enabled=False):
            kernel = _assemble(weight, layout, bases).to(x.dtype)
            # --- fast-path hook: convolution_backward or tiled FFT, chosen per shape (layers/_fft_conv.py)
            grad_x, grad_kernel = _fft_conv.conv3d_backward(grad_out.to(x.dtype), x, kernel,
                                                            ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        grad_weight = None
        if grad_kernel is not None:
            grad_weight = _weight_gradient(grad_kernel.to(weight.dtype), layout, bases)
        if grad_x is not None:
            grad_x = grad_x.to(ctx.input_dtype)
        return (grad_x, grad_weight, None, *([None] * len(bases)))


def _block_view(kernel: torch.Tensor, p: _Path) -> torch.Tensor:
    """``(out.mul, out.d, inp.mul, inp.d, taps)`` view of a path's block of a ``(C_out, C_in, T)``
    kernel."""
    block = kernel[p.out.start:p.out.stop, p.inp.start:p.inp.stop]
    return block.unflatten(0, (p.out.mul, p.out.d)).unflatten(2, (p.inp.mul, p.inp.d))


class SteerableConv3d(nn.Module):
    r"""Equivariant voxel convolution between irreps fields: one ``conv3d`` with a kernel built from a basis.

    .. math::

        K(r) = \sum_{\text{paths } i \times l \to j} \sum_s w_{j,i,s}\; \phi_s(|r|)\,
               \big(C^{l_i, l, l_j} \cdot Y^l(r / |r|)\big) \;+\; \delta(r)\, W_{\text{self}}

    with ``phi_s`` the radial functions of ``radial_basis``, ``C`` Wigner 3j symbols and ``Y^l`` spherical
    harmonics (``l <= lmax``) sampled at the voxel offsets in millimetres. ``radial_basis``:

    - ``"gaussian_shells"`` (the default): Gaussian shells (standard deviation 0.45 voxel) at radii 0, 1, 2, ...
      voxels of the finest axis up to the kernel radius, each carrying only the orders ``l`` its lattice
      points resolve (radius 0: ``l = 0``; radius 1: ``l <= 1``; the outermost: ``l <= lmax``). Band-limited,
      so the sampled kernel stays close to rotation-consistent off the grid (``_radial_profiles``). The
      shells are not cut at the radius: the kernel fills its box of taps (tails below 0.2 there).
    - ``"smooth_finite"`` (Diaz et al.'s): ``num_radial_basis`` e3nn ``smooth_finite``
      functions cut off at the kernel radius (they vanish at ``r = 0``), every ``l <= lmax`` at every radius; the kernel is a
      ball. Exact on the grid like the shells, but far from rotation-consistent off it.

    The self-connection (a pointwise equivariant linear map between equal irreps) is folded into the centre
    tap, so the forward pass is one convolution. The basis of each irrep pair is
    computed once at construction and orthonormalised (see ``_pair_basis``); the weight is a flat vector
    of the coefficients, initialised so the output has unit second moment for unit-variance white input.

    Conditions on the arguments:

    1. ``irreps_in`` / ``irreps_out`` are e3nn irreps strings; with ``parity=False`` (SO(3)) all must be
       even (``e``) and spherical harmonics are treated as even; with ``parity=True`` (O(3)) a path needs
       ``p_in * (-1)^l == p_out``.
    2. ``kernel_size`` is an odd integer: the number of taps along the finest axis; the kernel's radius is
       ``kernel_size / 2 * min(spacing)`` mm, so coarser axes get fewer taps. ``kernel_size=1``
       is the pointwise equivariant linear map (self-connection only; needs ``self_connection=True``).
    3. Every output irrep must be reachable from some input irrep (selection rule ``|l_i - l_j| <= l <=
       l_i + l_j``, ``l <= lmax``, or the self-connection).

    Convention: input ``(batch, irreps_in.dim, x, y, z)``, spatial dims 2, 3, 4 are x, y, z with voxel
    sizes ``spacing``; channels in e3nn's layout (copy-major); l = 1 components in (x, y, z) order, so a
    grid symmetry ``R`` acts on ``1o`` channels by ``R`` itself. Equivariance is exact for the grid
    symmetries that map the kernel lattice to itself (all 48 for isotropic spacing).

    In training the kernel is assembled in the forward pass and again in the backward pass rather than
    kept (see ``_ConvFromBasis``). In eval mode with autograd off it is built once and reused until a
    weight changes: the cache key holds each parameter's version counter, storage, device and dtype, so
    optimizer steps, ``load_state_dict``, re-initialisation and ``.to()`` all invalidate it; ``train()``
    drops it explicitly to free the kernel while training. Where the FFT path wins (``layers/_fft_conv.py``)
    the kernel's spectrum is cached with the kernel and dropped with it.

    >>> conv = SteerableConv3d("1x0e", "8x0e + 4x1e + 2x2e", kernel_size=5)
    >>> conv(torch.randn(2, 1, 16, 16, 16)).shape
    torch.Size([2, 30, 16, 16, 16])
    """

    def __init__(
        self,
        irreps_in,
        irreps_out,
        kernel_size: int = 5,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        num_radial_basis: int = 5,
        lmax: int = 2,
        self_connection: bool = True,
        parity: bool = False,
        bias: bool = True,
        radial_basis: str = DEFAULT_RADIAL_BASIS,
    ):
        super().__init__()
        self.irreps_in = parse_irreps(irreps_in, "irreps_in")
        self.irreps_out = parse_irreps(irreps_out, "irreps_out")
        if not parity:
            for name, irreps in (("irreps_in", self.irreps_in), ("irreps_out", self.irreps_out)):
                odd = [str(ir) for _, ir in irreps if ir.p != 1]
                if odd:
                    raise ValueError(f"{name} {irreps} holds odd irreps {odd}: use parity=True (O(3)) for them, "
                                     f"or even irreps only (SO(3))")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 \
                or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer (a centred kernel), got {kernel_size!r}")
        if kernel_size == 1 and not self_connection:
            raise ValueError("kernel_size=1 cannot hold a spatial kernel basis: use kernel_size >= 3, or "
                             "self_connection=True for a pointwise equivariant linear map")
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != 3 or not all(s > 0 and math.isfinite(s) for s in spacing):
            raise ValueError(f"spacing must be three positive voxel sizes (mm), got {spacing}")
        if num_radial_basis < 1:
            raise ValueError(f"num_radial_basis must be >= 1, got {num_radial_basis}")
        if lmax < 0:
            raise ValueError(f"lmax must be >= 0, got {lmax}")
        if radial_basis not in RADIAL_BASES:
            raise ValueError(f"radial_basis must be one of {RADIAL_BASES}, got {radial_basis!r}")
        self.radial_basis = radial_basis
        self.kernel_size, self.spacing, self.parity = kernel_size, spacing, bool(parity)
        self.num_radial_basis, self.lmax, self.self_connection = num_radial_basis, lmax, bool(self_connection)
        self.kernel_shape, _, self.radius = kernel_lattice(kernel_size, spacing)

        self._in_blocks, self._out_blocks = blocks(self.irreps_in), blocks(self.irreps_out)
        self._paths: list[_Path] = []
        self._basis_names: list[str] = []
        self._basis_float64: dict[str, torch.Tensor] = {}  # the exact bases, for dtype conversions (_apply)
        self._fan_in: list[int] = []
        offset = 0
        for bo in self._out_blocks:
            fan_in = 0
            for bi in self._in_blocks:
                basis = _pair_basis(bi.ir, bo.ir, kernel_size, spacing, num_radial_basis, lmax, self.parity,
                                    self.self_connection, radial_basis)
                n = basis.shape[0]
                if n == 0:
                    continue
                name = f"basis_{bi.ir}_{bo.ir}"
                if name not in self._basis_names:
                    # non-persistent: recomputed at construction, so the state dict holds only weights
                    self._basis_float64[name] = basis.reshape(n, -1)  # a view of _pair_basis's cached tensor
                    basis = basis.reshape(n, -1).to(torch.get_default_dtype(), copy=True)  # not the cached one
                    self.register_buffer(name, basis, persistent=False)
                    self._basis_names.append(name)
                self._paths.append(_Path(bo, bi, offset, n, self._basis_names.index(name)))
                offset += bo.mul * bi.mul * n
                fan_in += bi.mul * n
            if fan_in == 0:
                raise ValueError(
                    f"no equivariant path reaches output irrep {bo.ir} from irreps_in {self.irreps_in} "
                    f"(lmax={lmax}, parity={self.parity}, kernel_size={kernel_size}, spacing={spacing})")
            self._fan_in.append(fan_in)
        self.weight = nn.Parameter(torch.empty(offset))
        self._layout = _KernelLayout(tuple(self._paths), self.irreps_out.dim, self.irreps_in.dim,
                                     self.kernel_shape,
                                     len(self._paths) == len(self._in_blocks) * len(self._out_blocks))
        self.padding = self._layout.padding

        scalar_channels = [c for b in self._out_blocks if b.is_even_scalar for c in range(b.start, b.stop)]
        if bias and scalar_channels:
            self.bias = nn.Parameter(torch.zeros(len(scalar_channels)))
            self.register_buffer("_bias_index", torch.tensor(scalar_channels), persistent=False)
        else:
            self.register_parameter("bias", None)
        self._cache: tuple | None = None
        self.reset_parameters()

    @property
    def constant_buffers(self) -> tuple[str, ...]:
        """Buffers fixed at construction (kernel bases, bias index): DDP need not broadcast them."""
        return (*self._basis_names, *(["_bias_index"] if self.bias is not None else []))

    def reset_parameters(self) -> None:
        """Weights ~ N(0, d_out / fan_in) per output block: unit output second moment for white input."""
        with torch.no_grad():
            for path in self._paths:
                fan_in = self._fan_in[self._out_blocks.index(path.out)]
                self.weight[path.weights].normal_(0.0, math.sqrt(path.out.d / fan_in))
            if self.bias is not None:
                self.bias.zero_()

    def build_kernel(self) -> torch.Tensor:
        """The ``(irreps_out.dim, irreps_in.dim, *kernel_shape)`` conv3d weight (differentiable)."""
        return _KernelFromBasis.apply(self.weight, self._layout, *self._bases())

    def _bases(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self._basis_names]

    def _full_bias(self) -> torch.Tensor | None:
        if self.bias is None:
            return None
        return self.bias.new_zeros(self._layout.dim_out).index_copy(0, self._bias_index, self.bias)

    def _cached_kernel_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = tuple((p._version, p.data_ptr(), p.device, p.dtype) for p in self.parameters(recurse=False))
        if self._cache is None or self._cache[0] != key:
            # assembled outside autocast: the cached kernel keeps the weights' dtype whatever the caller's mode
            # the last entry holds the kernel's FFT spectra (layers/_fft_conv.py), dropped with the kernel
            self._cache = (key, self.build_kernel(), self._full_bias(), {})
        return self._cache[1], self._cache[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, irreps_in.dim, x, y, z)`` -> ``(batch, irreps_out.dim, x, y, z)``, same spatial size."""
        check_field(x, self._layout.dim_in, self.irreps_in)
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            if self.training or torch.is_grad_enabled():
                out = _ConvFromBasis.apply(x, self.weight, self._layout, *self._bases())
            else:  # compiled eval: no autograd node to build (dynamo mis-binds the Function's arguments there)
                out = _convolve(x, self.weight, self._layout, self._bases())[1]
            bias = self._full_bias()
            return out if bias is None else out + bias.to(out.dtype)[:, None, None, None]
        kernel, bias = self._cached_kernel_and_bias()
        # --- fast-path hook: conv3d or tiled FFT with the cached kernel spectrum (layers/_fft_conv.py)
        return _fft_conv.conv3d(x, kernel, bias, spectra=self._cache[3])

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _apply(self, fn, recurse=True):
        """``.double()``, ``.half()``, ``.to(dtype)`` ...: a basis buffer whose dtype changes is re-derived from
        the float64 basis in the new dtype (on its new device), instead of keeping a rounded basis upcast, so
        a network built in float32 and converted with ``.double()`` is float64-exact. Device moves and other
        conversions that keep the dtype are left to ``fn``. The eval kernel cache follows the parameters."""
        dtypes = {name: getattr(self, name).dtype for name in self._basis_names}
        super()._apply(fn, recurse)
        for name in self._basis_names:
            converted = getattr(self, name)
            if converted.dtype != dtypes[name]:
                self._buffers[name] = self._basis_float64[name].to(converted.device, converted.dtype, copy=True)
        return self

    def extra_repr(self) -> str:
        return (f"{self.irreps_in} -> {self.irreps_out}, kernel_shape={self.kernel_shape}, "
                f"spacing={self.spacing}, lmax={self.lmax}, num_radial_basis={self.num_radial_basis}, "
                f"parity={self.parity}, self_connection={self.self_connection}, bias={self.bias is not None}, "
                f"radial_basis={self.radial_basis!r}")
