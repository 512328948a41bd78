"""Mirror-symmetric 3D convolutions: kernels that equal their own reflection along chosen axes.

Dordiuk et al., "Benefits of mirror weight symmetry for 3D mesh segmentation" (Sec. II.C): only one half
of the kernel along each symmetric axis is trained; the full kernel is that half concatenated with its
flip, ``W_hat = W (+) T_a(W)``, repeated for every symmetric axis. A stride-1 convolution with such a
kernel commutes with flips of the input along those axes.

Convention
----------
- Inputs are ``(batch, channels, x, y, z)``. The paper's axes 1, 2, 3 (symmetries ``f1``, ``f2``,
  ``f3``) are the tensor's spatial dims 2, 3, 4, which are nnU-Net's data axes 0, 1, 2 (the numbers in
  its ``allowed_mirroring_axes``). ``f13`` is symmetric along dims 2 and 4; ``f123`` along all three.
- A kernel of size ``k`` along a symmetric axis satisfies ``W[.., i, ..] == W[.., k - 1 - i, ..]``. Its
  free entries are the first ``ceil(k / 2)`` slices; for odd ``k`` the middle slice is its own mirror
  (3 -> 2 free entries, 5 -> 3, 4 -> 2).
- ``.weight`` is the free half, ``(out, in / groups, h_x, h_y, h_z)`` with ``h = ceil(k / 2)`` along
  symmetric axes and ``h = k`` elsewhere (for the transposed layer ``(in, out / groups, ...)`` as in
  PyTorch). ``state_dict``, ``parameters()`` and optimizers see only free entries;
  ``symmetric_weight`` is the full kernel the convolution uses.
- A strided window is mirror-symmetric only if the windows sit symmetrically in the input: the layer
  raises ``ValueError`` for an input length where they do not (e.g. stride 2, kernel 3, padding 1 on an
  even length), instead of silently breaking the symmetry.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..symmetry import MIRROR_SYMMETRIES, symmetry_axes

__all__ = [
    "SYMMETRIES",
    "MirrorSymmetricConv3d",
    "MirrorSymmetricConvTranspose3d",
    "mirror_conv_op",
    "symmetry_axes",
]

#: Every accepted value of ``symmetry``: none, one axis (f*), two axes (f**), all three (f***).
SYMMETRIES = MIRROR_SYMMETRIES


@functools.cache
def _expansion_matrix(free_shape: tuple[int, ...], kernel_size: tuple[int, ...], axes: tuple[int, ...]) -> Tensor:
    """0/1 matrix ``E`` of shape ``(prod(free_shape), prod(kernel_size))``: ``full = free @ E``.

    Each full tap reads the free tap at ``min(i, k - 1 - i)`` along symmetric axes (flip-and-concatenate
    as one gather). A matrix product with one 1 per column is exact in every float type and, unlike
    ``index_select``, fast on the CPU and deterministic in its backward on the GPU. (CPU, float64; cached.)
    """
    cpu = torch.device("cpu")  # explicit: a cached value must not inherit a `with torch.device(...)` context
    idx = [torch.arange(k, device=cpu) for k in kernel_size]
    for a in axes:
        idx[a] = torch.minimum(idx[a], kernel_size[a] - 1 - idx[a])
    grid = torch.meshgrid(*idx, indexing="ij")
    free_flat = (grid[0] * free_shape[1] + grid[1]) * free_shape[2] + grid[2]
    E = torch.zeros(math.prod(free_shape), math.prod(kernel_size), dtype=torch.float64, device=cpu)
    E[free_flat.flatten(), torch.arange(E.shape[1], device=cpu)] = 1
    return E


class _MirrorSymmetricWeight:
    """Shared by the convolution and the transposed convolution: free weight, assembly, eval cache."""

    symmetry: str | None

    def _make_weight_symmetric(self, symmetry: str | None, device, dtype) -> None:
        """Replace the full ``weight`` created by the PyTorch base class (on the meta device) by the
        free half, create the bias for real, and initialise both."""
        self.symmetry = symmetry
        self.mirror_axes = symmetry_axes(symmetry)
        factory = {"device": device, "dtype": dtype}
        full_shape = tuple(self.weight.shape)
        free_shape = tuple((k + 1) // 2 if a in self.mirror_axes else k for a, k in enumerate(self.kernel_size))
        self._full_shape = full_shape
        self.weight = nn.Parameter(torch.empty(*full_shape[:2], *free_shape, **factory))
        if self.bias is not None:
            self.bias = nn.Parameter(torch.empty(self.out_channels, **factory))
        if free_shape == tuple(self.kernel_size):  # e.g. 1x1x1 kernels: nothing to mirror
            self._expansion = None
        else:
            E = _expansion_matrix(free_shape, tuple(self.kernel_size), self.mirror_axes)
            self.register_buffer("_expansion", E.to(self.weight.device, self.weight.dtype, copy=True),
                                 persistent=False)
        self._cache: Tensor | None = None
        self._cache_key: tuple | None = None
        self.reset_parameters()

    @property
    def constant_buffers(self) -> tuple[str, ...]:
        """Buffers fixed at construction (the expansion matrix): DDP need not broadcast them."""
        return () if self._expansion is None else ("_expansion",)

    # -- the full kernel ---------------------------------------------------------------------------------

    def _assemble(self) -> Tensor:
        w = self.weight
        with torch.autocast(w.device.type, enabled=False):  # copy the weight in its own dtype
            full = torch.mm(w.reshape(-1, self._expansion.shape[0]), self._expansion)
        return full.view(self._full_shape)

    @property
    def symmetric_weight(self) -> Tensor:
        """The full kernel ``(out, in / groups, *kernel_size)``, symmetric along ``mirror_axes``.

        Assembled on every call while gradients are needed (training); otherwise (``eval()`` under
        ``no_grad`` / ``inference_mode``) built once and reused until the free weight changes (an
        optimizer step, ``load_state_dict``, a move to another device or dtype); ``train()`` drops it.
        """
        if self._expansion is None:
            return self.weight
        w = self.weight
        if self.training or (torch.is_grad_enabled() and w.requires_grad) or torch.compiler.is_compiling():
            return self._assemble()
        key = (w._version, w.data_ptr(), w.dtype, w.device, torch.is_inference_mode_enabled())
        if key != self._cache_key:
            self._cache, self._cache_key = self._assemble(), key
        return self._cache

    def _clear_cache(self) -> None:
        self._cache = self._cache_key = None

    def train(self, mode: bool = True):
        if mode:  # free the eval kernel while training; eval() keeps it (nnU-Net calls eval() per case)
            self._clear_cache()
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._clear_cache()
        return super()._load_from_state_dict(*args, **kwargs)

    # -- initialisation ----------------------------------------------------------------------------------

    def full_fans(self) -> tuple[int, int]:
        """``(fan_in, fan_out)`` of the full kernel, as ``nn.init`` computes them for a plain layer."""
        return nn.init._calculate_fan_in_and_fan_out(torch.empty(self._full_shape, device="meta"))

    def kaiming_normal_(self, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
        """``nn.init.kaiming_normal_`` with the fans of the full kernel: every entry of
        ``symmetric_weight`` gets the distribution it has in a plain layer. ``layer.kaiming_normal_(a=1e-2)``
        is nnU-Net's ``InitWeights_He`` for this layer (``InitWeights_He`` itself takes the fan of the
        smaller free weight: a standard deviation larger by ``sqrt(prod(kernel_size) / free taps)``)."""
        if mode not in ("fan_in", "fan_out"):
            raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
        fan = self.full_fans()[0 if mode == "fan_in" else 1]
        std = nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan > 0 else 0.0
        return nn.init.normal_(self.weight, 0.0, std)

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation of a plain layer, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for
        weight and bias, with the fan of the full kernel."""
        if not hasattr(self, "_full_shape"):  # called by the base __init__ on its meta placeholders
            return
        fan_in = self.full_fans()[0]
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, symmetry={self.symmetry}"


class MirrorSymmetricConv3d(_MirrorSymmetricWeight, nn.Conv3d):
    """``nn.Conv3d`` whose kernel is mirror-symmetric along the axes of ``symmetry``.

    ``symmetry``: ``None``, ``"f1"``, ``"f2"``, ``"f3"`` (one axis), ``"f12"``, ``"f13"``, ``"f23"`` (two),
    ``"f123"`` (all three); axis 1, 2, 3 = tensor dim 2, 3, 4 = nnU-Net data axis 0, 1, 2.
    Every other argument is ``nn.Conv3d``'s. ``forward`` maps ``(batch, in, x, y, z)`` to
    ``(batch, out, x', y', z')`` exactly like ``nn.Conv3d`` with ``symmetric_weight``, and
    ``flip(layer(x), d) == layer(flip(x, d))`` for every symmetric dim ``d`` whenever the windows sit
    symmetrically (always for stride 1 with the usual ``padding = dilation * (k - 1) / 2``).

    Raises ``ValueError`` for an unknown ``symmetry``, for ``padding="same"`` with an even (dilated)
    kernel along a symmetric axis (PyTorch pads it unevenly), and in ``forward`` for an input length
    whose strided windows are not centred along a symmetric axis.

    Example::

        conv = MirrorSymmetricConv3d(32, 64, 3, padding=1, symmetry="f123")
        conv.weight.shape            # (64, 32, 2, 2, 2): 8 free taps instead of 27
        conv.symmetric_weight.shape  # (64, 32, 3, 3, 3)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None,
                 symmetry: str | None = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device="meta", dtype=dtype)
        self._make_weight_symmetric(symmetry, device, dtype)
        axes = self.mirror_axes
        if self.padding == "same" and any(self.dilation[a] * (self.kernel_size[a] - 1) % 2 for a in axes):
            raise ValueError(f"padding='same' pads an even kernel {self.kernel_size} unevenly, which breaks "
                             f"the mirror symmetry {symmetry}; use an odd kernel or explicit padding")
        self._strided_axes = tuple(a for a in axes if self.stride[a] > 1)

    def _check_windows_centred(self, shape: torch.Size) -> None:
        padding = (0, 0, 0) if isinstance(self.padding, str) else self.padding
        for a in self._strided_axes:
            length, k, s, p, d = shape[2 + a], self.kernel_size[a], self.stride[a], padding[a], self.dilation[a]
            span = d * (k - 1)
            n = (length + 2 * p - span - 1) // s + 1
            if n >= 1 and span - 2 * p + (n - 1) * s != length - 1:
                raise ValueError(
                    f"{type(self).__name__}(symmetry={self.symmetry}): stride {s}, kernel {k}, padding {p} "
                    f"on length {length} along dim {2 + a} places the windows off-centre, so the output is "
                    f"not mirror-symmetric; choose a length with (length + 2*padding - dilation*(kernel - 1) "
                    f"- 1) divisible by the stride, or pool before a stride-1 convolution"
                )

    def forward(self, input: Tensor) -> Tensor:
        if self._strided_axes:
            self._check_windows_centred(input.shape)
        return self._conv_forward(input, self.symmetric_weight, self.bias)


class MirrorSymmetricConvTranspose3d(_MirrorSymmetricWeight, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` whose kernel is mirror-symmetric along the axes of ``symmetry``.

    Same conventions as :class:`MirrorSymmetricConv3d`. A transposed convolution with a symmetric kernel
    commutes with the flips for every input length as long as ``output_padding`` is 0 along the
    symmetric axes (the adjoint of a centred convolution); with ``kernel_size == stride`` (nnU-Net's
    upsampling) and ``f123`` it is nearest-neighbour upsampling followed by a 1x1x1 convolution.
    Raises ``ValueError`` for a non-zero ``output_padding`` (given or implied by ``output_size``) along a
    symmetric axis.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1, padding_mode: str = "zeros",
                 device=None, dtype=None, symmetry: str | None = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, padding_mode, device="meta", dtype=dtype)
        self._make_weight_symmetric(symmetry, device, dtype)
        self._check_output_padding(self.output_padding)

    def _check_output_padding(self, output_padding) -> None:
        if any(output_padding[a] for a in self.mirror_axes):
            raise ValueError(f"{type(self).__name__}(symmetry={self.symmetry}): output_padding "
                             f"{tuple(output_padding)} adds voxels on one side only, which breaks the symmetry")

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                              3, self.dilation)
        if output_size is not None:
            self._check_output_padding(output_padding)
        return F.conv_transpose3d(input, self.symmetric_weight, self.bias, self.stride, self.padding,
                                  output_padding, self.groups, self.dilation)


@functools.cache
def mirror_conv_op(symmetry: str | None) -> type[MirrorSymmetricConv3d]:
    """``MirrorSymmetricConv3d`` with ``symmetry`` fixed, as a class: for builders that take a ``conv_op``
    class and call it with ``nn.Conv3d``'s arguments (dynamic_network_architectures' blocks)."""
    symmetry_axes(symmetry)
    name = f"MirrorSymmetricConv3d_{symmetry}"
    init = functools.partialmethod(MirrorSymmetricConv3d.__init__, symmetry=symmetry)
    return type(name, (MirrorSymmetricConv3d,), {"__init__": init, "__module__": __name__, "__qualname__": name})


def __getattr__(name: str):
    """Resolve ``MirrorSymmetricConv3d_f123`` & co. by name, so modules using them can be pickled."""
    prefix = "MirrorSymmetricConv3d_"
    if name.startswith(prefix) and name[len(prefix):] in [str(s) for s in SYMMETRIES]:
        symmetry = name[len(prefix):]
        return mirror_conv_op(None if symmetry == "None" else symmetry)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
