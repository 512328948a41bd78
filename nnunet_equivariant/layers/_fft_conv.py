"""Tiled overlap-save FFT convolution for ``SteerableConv3d``, and the per-shape choice between it and ``conv3d``.

``conv3d(x, kernel)`` here is ``F.conv3d(x, kernel, padding=taps // 2)`` for odd taps (a "same" cross-correlation,
stride 1, no dilation), computed either directly or in the frequency domain:

- **forward** (overlap-save): the input padded by ``taps // 2`` is cut into overlapping tiles of ``N`` voxels
  per axis with stride ``t = N - taps + 1``; each tile's ``rfftn`` is multiplied, per frequency, by the
  ``(C_in, C_out)`` matrix ``conj(rfftn(kernel, N))`` (a batched matrix product over frequencies); the
  inverse transform's first ``t`` voxels per axis are the tile's exact (circular-wrap-free) output.
- **input gradient**: the same machinery on the output gradient with the kernel's spectrum itself
  (convolution = correlation with the flipped kernel), keeping voxels ``taps - 1 .. taps - 2 + t``.
- **kernel gradient**: per frequency, ``sum over batch and tiles of conj(G) X`` with ``G`` the spectrum
  of non-overlapping ``t``-blocks of the output gradient (zero-padded to ``N``) and ``X`` the input tiles'
  spectrum (recomputed in backward rather than kept); the inverse transform's first ``taps`` voxels.

Only the tiles' spectra are ever held (never a whole-volume spectrum, which would be ``C_in * C_out *
volume`` for the kernel). The inverse transform crops after each axis, so the second and third axes only
transform the kept part. Half precision (autocast) runs the FFT path in float32 and casts back.

Which algorithm runs is decided per shape by measurement, like ``torch.backends.cudnn.benchmark``: the first
call with a new ``(direction, batch, C_in, C_out, spatial size, taps, dtype, device)`` times ``conv3d`` and
the FFT path at a few tile sizes and caches the fastest (see :func:`algorithm_cache`). The mode is set by
:func:`set_conv_algorithm` / :func:`conv_algorithm` (``"auto"``, ``"direct"``, ``"fft"``) or the
environment variable ``NNUNET_EQUIVARIANT_CONV``; under ``torch.compile``, ``"auto"`` uses ``conv3d``
(no timing inside a trace), a forced ``"fft"`` is traced as is.

Shapes: ``x`` ``(batch, C_in, x, y, z)``, ``kernel`` ``(C_out, C_in, kx, ky, kz)`` with odd taps, output
``(batch, C_out, x, y, z)``.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

__all__ = ["conv3d", "conv3d_backward", "set_conv_algorithm", "conv_algorithm", "get_conv_algorithm",
           "algorithm_cache", "fft_conv3d", "fft_conv3d_backward", "kernel_spectrum"]

MODES = ("auto", "direct", "fft")
# FFT sizes tried per axis by the measurement (clipped to what an axis needs); 5-smooth sizes only.
FFT_SIZES = (12, 16, 24)
# Fewer tiles than this (batch x tiles) make the per-frequency products too small to be worth timing.
MIN_TILES = 4

# Default "direct": on the CPU measured here the FFT path gained ~1.04x per training step and 1.2x per
# eval forward at 2.8x the eval memory (docs/benchmarks_e3nn.md), memory the planner's sizing does not
# count; "auto" is opt-in until a GPU measurement shows it pays.
_mode: str = os.environ.get("NNUNET_EQUIVARIANT_CONV", "direct")
_forced_size: int | None = None
_choices: dict[tuple, str | int] = {}


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"convolution algorithm must be one of {MODES}, got {mode!r}")
    return mode


def set_conv_algorithm(mode: str, fft_size: int | None = None) -> None:
    """``"auto"`` (measure per shape), ``"direct"`` (``F.conv3d``, the default) or ``"fft"`` (with ``fft_size``
    voxels per tile axis, or the measured best size when ``None``)."""
    global _mode, _forced_size
    if fft_size is not None and (isinstance(fft_size, bool) or not isinstance(fft_size, int) or fft_size < 2):
        raise ValueError(f"fft_size must be an integer >= 2, got {fft_size!r}")
    _mode, _forced_size = _check_mode(mode), fft_size


def get_conv_algorithm() -> tuple[str, int | None]:
    return _check_mode(_mode), _forced_size


@contextlib.contextmanager
def conv_algorithm(mode: str, fft_size: int | None = None) -> Iterator[None]:
    """Context manager around :func:`set_conv_algorithm` that restores the previous setting."""
    previous = get_conv_algorithm()
    set_conv_algorithm(mode, fft_size)
    try:
        yield
    finally:
        set_conv_algorithm(*previous)


def algorithm_cache() -> dict[tuple, str | int]:
    """The measured choices: key ``(direction, batch, C_in, C_out, spatial, taps, dtype, device)`` ->
    ``"direct"`` or the FFT size. Clear it to measure again."""
    return _choices


# ----------------------------------------------------------------------------------------------------------
# geometry

def _tiling(spatial: Sequence[int], taps: Sequence[int], fft_size: int) -> tuple[tuple[int, ...], ...]:
    """Per axis ``(N, t, n)``: FFT size, output voxels per tile, number of tiles. ``N`` is ``fft_size``
    unless one tile of a smaller size covers the axis."""
    out = []
    for s, k in zip(spatial, taps):
        n_fft = max(fft_size, k)
        t = n_fft - k + 1
        if t >= s:  # one tile covers the axis: the smallest size that holds it
            n_fft, t = s + k - 1, s
        out.append((n_fft, t, -(-s // t)))
    return tuple(out)


def _tiles(x: torch.Tensor, taps, tiling, left: Sequence[int]) -> torch.Tensor:
    """``(B, C, X, Y, Z)`` -> overlapping tiles ``(B * T, C, Nx, Ny, Nz)`` (tile-major, ``T`` tiles) of ``x``
    padded by ``left`` before and whatever the tiles need after."""
    pad = []
    for (n_fft, t, n), s, lo in reversed(list(zip(tiling, x.shape[2:], left))):
        pad += [lo, n * t + n_fft - t - s - lo]
    xp = F.pad(x, pad)
    for axis, (n_fft, t, _) in enumerate(tiling):
        xp = xp.unfold(2 + axis, n_fft, t)
    b, c = x.shape[:2]
    return xp.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(-1, c, *(n for n, _, _ in tiling))


def _blocks(g: torch.Tensor, tiling) -> torch.Tensor:
    """``(B, C, X, Y, Z)`` -> non-overlapping ``t``-blocks ``(B * T, C, tx, ty, tz)``, zero-padded at the end."""
    pad = []
    for (_, t, n), s in reversed(list(zip(tiling, g.shape[2:]))):
        pad += [0, n * t - s]
    gp = F.pad(g, pad)
    b, c = g.shape[:2]
    (_, tx, nx), (_, ty, ny), (_, tz, nz) = tiling
    gp = gp.view(b, c, nx, tx, ny, ty, nz, tz).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return gp.reshape(-1, c, tx, ty, tz)


def _spectrum_matrix(tiles: torch.Tensor, sizes) -> torch.Tensor:
    """``(M, C, ...)`` real -> ``(F, M, C)`` complex: the tiles' ``rfftn`` (zero-padded to ``sizes``),
    frequency-major for the batched matrix product."""
    m, c = tiles.shape[:2]
    spec = torch.fft.rfftn(tiles, s=sizes, dim=(-3, -2, -1))
    return spec.reshape(m * c, -1).t().contiguous().view(-1, m, c)


def _inverse_cropped(spec: torch.Tensor, sizes, keep: Sequence[slice]) -> torch.Tensor:
    """``(..., Nx, Ny, Nz // 2 + 1)`` complex -> real ``(..., len(keep_x), len(keep_y), len(keep_z))``:
    ``irfftn`` with the kept voxels of each axis taken before the next axis is transformed."""
    spec = torch.fft.ifft(spec, n=sizes[0], dim=-3)[..., keep[0], :, :]
    spec = torch.fft.ifft(spec, n=sizes[1], dim=-2)[..., keep[1], :]
    return torch.fft.irfft(spec, n=sizes[2], dim=-1)[..., keep[2]]


def _to_volume(y: torch.Tensor, batch: int, tiling, spatial) -> torch.Tensor:
    """Tiles' outputs ``(B * T, C, tx, ty, tz)`` -> ``(B, C, X, Y, Z)``."""
    (_, tx, nx), (_, ty, ny), (_, tz, nz) = tiling
    c = y.shape[1]
    y = y.view(batch, nx, ny, nz, c, tx, ty, tz).permute(0, 4, 1, 5, 2, 6, 3, 7)
    y = y.reshape(batch, c, nx * tx, ny * ty, nz * tz)
    return y[:, :, :spatial[0], :spatial[1], :spatial[2]].contiguous()


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def kernel_spectrum(kernel: torch.Tensor, spatial: Sequence[int], fft_size: int) -> torch.Tensor:
    """``(F, C_in, C_out)`` complex: ``rfftn(kernel)`` at the tiling's FFT sizes, frequency-major (the
    forward pass's matrix is its conjugate, the input gradient's its transpose)."""
    taps = kernel.shape[2:]
    sizes = [n for n, _, _ in _tiling(spatial, taps, fft_size)]
    spec = torch.fft.rfftn(kernel.to(_compute_dtype(kernel.dtype)), s=sizes, dim=(-3, -2, -1))
    c_out, c_in = kernel.shape[:2]
    return spec.reshape(c_out, c_in, -1).permute(2, 1, 0).contiguous()


# ----------------------------------------------------------------------------------------------------------
# FFT convolution, forward and backward

def fft_conv3d(x: torch.Tensor, kernel: torch.Tensor, fft_size: int,
               spectrum: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv3d(x, kernel, padding=taps // 2)`` by tiled overlap-save FFT; ``spectrum`` (from
    :func:`kernel_spectrum` with the same ``fft_size`` and spatial size) saves the kernel's transform."""
    dtype = x.dtype
    x = x.to(_compute_dtype(dtype))
    taps, spatial, batch = kernel.shape[2:], x.shape[2:], x.shape[0]
    tiling = _tiling(spatial, taps, fft_size)
    sizes = [n for n, _, _ in tiling]
    if spectrum is None:
        spectrum = kernel_spectrum(kernel, spatial, fft_size)
    xs = _spectrum_matrix(_tiles(x, taps, tiling, [k // 2 for k in taps]), sizes)  # (F, B*T, C_in)
    ys = torch.bmm(xs, spectrum.conj())  # (F, B*T, C_out)
    del xs
    m, c_out = ys.shape[1:]
    ys = ys.view(-1, m * c_out).t().reshape(m, c_out, sizes[0], sizes[1], sizes[2] // 2 + 1)
    y = _inverse_cropped(ys, sizes, [slice(0, t) for _, t, _ in tiling])
    return _to_volume(y, batch, tiling, spatial).to(dtype)


def fft_conv3d_backward(grad_out: torch.Tensor, x: torch.Tensor, kernel: torch.Tensor, fft_size: int,
                        need_input: bool = True, need_kernel: bool = True):
    """``(grad_x, grad_kernel)`` of :func:`fft_conv3d` (``None`` where not needed), by the same tiling."""
    dtype = x.dtype
    cdtype = _compute_dtype(dtype)
    x, grad_out = x.to(cdtype), grad_out.to(cdtype)
    taps, spatial, batch = kernel.shape[2:], x.shape[2:], x.shape[0]
    tiling = _tiling(spatial, taps, fft_size)
    sizes = [n for n, _, _ in tiling]
    grad_x = grad_kernel = None
    if need_input:
        spectrum = kernel_spectrum(kernel, spatial, fft_size)  # (F, C_in, C_out)
        gs = _spectrum_matrix(_tiles(grad_out, taps, tiling, [k // 2 for k in taps]), sizes)  # (F, B*T, C_out)
        xs = torch.bmm(gs, spectrum.transpose(1, 2))  # (F, B*T, C_in)
        del gs
        m, c_in = xs.shape[1:]
        xs = xs.view(-1, m * c_in).t().reshape(m, c_in, sizes[0], sizes[1], sizes[2] // 2 + 1)
        gx = _inverse_cropped(xs, sizes, [slice(k - 1, k - 1 + t) for k, (_, t, _) in zip(taps, tiling)])
        grad_x = _to_volume(gx, batch, tiling, spatial).to(dtype)
    if need_kernel:
        gs = _spectrum_matrix(_blocks(grad_out, tiling), sizes)  # (F, B*T, C_out)
        xs = _spectrum_matrix(_tiles(x, taps, tiling, [k // 2 for k in taps]), sizes)  # (F, B*T, C_in)
        ks = torch.bmm(gs.transpose(1, 2).conj(), xs)  # (F, C_out, C_in)
        del gs, xs
        c_out, c_in = ks.shape[1:]
        ks = ks.view(-1, c_out * c_in).t().reshape(c_out, c_in, sizes[0], sizes[1], sizes[2] // 2 + 1)
        grad_kernel = _inverse_cropped(ks, sizes, [slice(0, k) for k in taps]).to(kernel.dtype)
    return grad_x, grad_kernel


def _onednn_bfloat16_kernel_gradient_is_wrong(x: torch.Tensor, kernel: torch.Tensor) -> bool:
    """Whether oneDNN's CPU ``bfloat16`` convolution backward would return a wrong kernel gradient here.

    Measured with torch 2.14 (oneDNN 3.12) on an AMD EPYC with AVX512-BF16: when the first spatial axis of
    the input is shorter than the kernel's taps along it (a 5-tap kernel on a 4-voxel map, a 3-tap one on
    2 voxels: the deep stages of a small patch), the kernel gradient is garbage (relative error ~1, often
    1e30 or inf / NaN, different on every call) while the input gradient, the forward pass, float16, float32
    and torch without oneDNN are right. Checked on every axis, not only the first, to stay safe."""
    return (x.device.type == "cpu" and x.dtype == torch.bfloat16
            and any(s < k for s, k in zip(x.shape[2:], kernel.shape[2:])))


def _direct_backward(grad_out, x, kernel, need_input, need_kernel):
    padding = [k // 2 for k in kernel.shape[2:]]
    dtype = x.dtype
    if need_kernel and _onednn_bfloat16_kernel_gradient_is_wrong(x, kernel):
        # maps this small cost nothing in float32 (same numbers as bfloat16 with float32 accumulation)
        grad_out, x, kernel = grad_out.float(), x.float(), kernel.float()
    grad_x, grad_kernel, _ = torch.ops.aten.convolution_backward(
        grad_out, x, kernel, None, [1, 1, 1], padding, [1, 1, 1], False, [0, 0, 0], 1,
        [need_input, need_kernel, False])
    return (None if grad_x is None else grad_x.to(dtype)), (None if grad_kernel is None else grad_kernel.to(dtype))


# ----------------------------------------------------------------------------------------------------------
# choice by measurement

def _candidate_sizes(spatial, taps, batch: int = MIN_TILES) -> list[int]:
    """FFT sizes worth timing: distinct tilings with at least 2 output voxels per tile on every axis and
    at least ``MIN_TILES`` rows (batch x tiles) per frequency's matrix product."""
    sizes, seen = [], set()
    for n in FFT_SIZES:
        tiling = _tiling(spatial, taps, n)
        rows = batch * math.prod(tiles for _, _, tiles in tiling)
        if all(t >= min(2, s) for (_, t, _), s in zip(tiling, spatial)) and rows >= MIN_TILES \
                and tiling not in seen:
            seen.add(tiling)
            sizes.append(n)
    return sizes


def _time(fn, device: torch.device, repeats: int = 1) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()  # warm-up (plans, allocations)
    best = math.inf
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def _choose(direction: str, x: torch.Tensor, kernel: torch.Tensor, run_direct, run_fft) -> str | int:
    mode, forced = get_conv_algorithm()
    if mode == "direct" or (mode == "auto" and torch.compiler.is_compiling()):
        return "direct"
    taps, spatial = tuple(kernel.shape[2:]), tuple(x.shape[2:])
    if mode == "fft":
        return forced or _choices.get(("fft",) + _key(direction, x, kernel)) or _best_fft_size(spatial, taps)
    key = _key(direction, x, kernel)
    if key not in _choices:
        with torch.no_grad():
            timings = {"direct": _time(run_direct, x.device)}
            for n in _candidate_sizes(spatial, taps, x.shape[0]):
                timings[n] = _time(lambda: run_fft(n), x.device)
        _choices[key] = min(timings, key=timings.get)
        fft_only = {k: v for k, v in timings.items() if k != "direct"}
        if fft_only:
            _choices[("fft",) + key] = min(fft_only, key=fft_only.get)
    return _choices[key]


def _key(direction: str, x: torch.Tensor, kernel: torch.Tensor) -> tuple:
    return (direction, x.shape[0], kernel.shape[1], kernel.shape[0], tuple(x.shape[2:]), tuple(kernel.shape[2:]),
            x.dtype, x.device)


def _best_fft_size(spatial, taps) -> int:
    """Without a measurement: the candidate with the fewest frequencies per output voxel."""
    def cost(n):
        tiling = _tiling(spatial, taps, n)
        return math.prod(nf * tiles for nf, _, tiles in tiling) / math.prod(spatial)
    return min(_candidate_sizes(spatial, taps) or [FFT_SIZES[-1]], key=cost)


def conv3d(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None = None,
           spectra: dict | None = None) -> torch.Tensor:
    """``F.conv3d(x, kernel, bias, padding=taps // 2)`` by the chosen algorithm. ``spectra`` (a dict owned
    by the caller, emptied when the kernel changes) keeps the kernel's spectrum per tiling for eval."""
    if any(k % 2 == 0 for k in kernel.shape[2:]):
        raise ValueError(f"kernel taps must be odd (a centred kernel), got {tuple(kernel.shape[2:])}")
    padding = [k // 2 for k in kernel.shape[2:]]
    device = x.device.type
    if torch.is_autocast_enabled(device):  # as F.conv3d under autocast: computed and returned in its dtype
        with torch.autocast(device, enabled=False):
            dtype = torch.get_autocast_dtype(device)
            return conv3d(x.to(dtype), kernel.to(dtype), None if bias is None else bias.to(dtype), spectra)

    def run_direct():
        return F.conv3d(x, kernel.to(x.dtype), padding=padding)

    def run_fft(n, spectrum=None):
        return fft_conv3d(x, kernel, n, spectrum)

    pointwise = all(k == 1 for k in kernel.shape[2:])  # nothing for a transform to save
    choice = "direct" if pointwise else _choose("forward", x, kernel, run_direct, run_fft)
    if choice == "direct":
        out = run_direct()
    else:
        spectrum = None
        if spectra is not None:
            key = (choice, tuple(x.shape[2:]), kernel.dtype, x.device)
            if key not in spectra:
                spectra[key] = kernel_spectrum(kernel, x.shape[2:], choice)
            spectrum = spectra[key]
        out = run_fft(choice, spectrum)
    return out if bias is None else out + bias.to(out.dtype)[:, None, None, None]


def conv3d_backward(grad_out: torch.Tensor, x: torch.Tensor, kernel: torch.Tensor, need_input: bool = True,
                    need_kernel: bool = True):
    """``(grad_x, grad_kernel)`` of :func:`conv3d` without bias (``None`` where not needed), by the
    algorithm chosen for this shape's backward pass."""
    if all(k == 1 for k in kernel.shape[2:]):
        return _direct_backward(grad_out, x, kernel, need_input, need_kernel)
    choice = _choose(f"backward{int(need_input)}{int(need_kernel)}", x, kernel,
                     lambda: _direct_backward(grad_out, x, kernel, need_input, need_kernel),
                     lambda n: fft_conv3d_backward(grad_out, x, kernel, n, need_input, need_kernel))
    if choice == "direct":
        return _direct_backward(grad_out, x, kernel, need_input, need_kernel)
    return fft_conv3d_backward(grad_out, x, kernel, choice, need_input, need_kernel)
