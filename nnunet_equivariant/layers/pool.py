"""Pooling of irreps fields: ``NormMaxPool3d`` (max pooling, scalars by value and every other irrep by its
norm) and ``MeanPool3d`` (the mean over each window of every component: linear and continuous)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._irreps import at_least_float32, blocks, check_field, parse_irreps, squared_norms

__all__ = ["NormMaxPool3d", "MeanPool3d", "POOLINGS", "make_pool"]


class _WindowPool(nn.Module):
    """What every pooling of irreps fields with window = stride shares: the irreps, the stride per axis (x, y,
    z; ``ValueError`` naming a bad one) and the input check (field layout, every axis divisible by its
    stride: a dropped voxel would break equivariance)."""

    def __init__(self, irreps, stride: int | Sequence[int]):
        super().__init__()
        self.irreps = parse_irreps(irreps, "irreps")
        self.irreps_in = self.irreps_out = self.irreps
        stride = (stride,) * 3 if isinstance(stride, int) else tuple(int(s) for s in stride)
        if len(stride) != 3 or min(stride) < 1:
            raise ValueError(f"stride must be a positive int or three positive ints, got {stride}")
        self.stride = stride
        self._dim = self.irreps.dim

    def _check(self, x: torch.Tensor) -> None:
        check_field(x, self._dim, self.irreps)
        if any(n % s for n, s in zip(x.shape[2:], self.stride)):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} is not divisible by the pooling stride "
                             f"{self.stride}: pooling would drop voxels and break equivariance")

    def extra_repr(self) -> str:
        return f"{self.irreps}, stride={self.stride}"


class NormMaxPool3d(_WindowPool):
    r"""Equivariant max pooling with window = stride (Cesa et al. 2021).

    - ``0e`` channels: ordinary max pooling by value.
    - every other irrep copy (``l > 0`` and odd scalars ``0o``): the whole copy at the voxel of largest
      l2 norm in the window (pooling ``0o`` by value would not commute with reflections, which flip its
      sign). The voxel is gathered with per-sample, per-copy indices, so each sample keeps its own vectors.

    Exact on the grid symmetries that map the windows to themselves: every pooled axis divisible by its
    stride and equal strides along axes the symmetry permutes.

    Convention: ``(batch, irreps.dim, x, y, z)``; ``stride`` per spatial axis (x, y, z) or one int.
    """

    def __init__(self, irreps, stride: int | Sequence[int]):
        super().__init__(irreps, stride)
        self._blocks = blocks(self.irreps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, irreps.dim, x, y, z)`` -> ``(batch, irreps.dim, x / sx, y / sy, z / sz)``."""
        self._check(x)
        parts = []
        for xb, b in zip(x.split([b.dim for b in self._blocks], 1), self._blocks):
            if b.is_even_scalar:
                parts.append(F.max_pool3d(xb, self.stride))
                continue
            v = xb.unflatten(1, (b.mul, b.d))  # (batch, mul, d, x, y, z)
            index = self.argmax_norm(xb, b.d)
            out_shape = index.shape[2:]
            index = index.flatten(2).unsqueeze(2).expand(-1, -1, b.d, -1)
            pooled = torch.gather(v.flatten(3), 3, index)  # (batch, mul, d, x'y'z')
            parts.append(pooled.reshape(x.shape[0], b.dim, *out_shape))
        return torch.cat(parts, dim=1)

    def argmax_norm(self, xb: torch.Tensor, d: int) -> torch.Tensor:
        """``(batch, mul * d, x, y, z)`` copies of one irrep of dimension ``d`` -> ``(batch, mul, x', y', z')``:
        the flat index (into x * y * z) of each window's voxel of largest l2 norm. A discontinuous choice:
        where two voxels' norms tie to within rounding, float16 and float32 inputs can pick different
        vectors (docs/benchmarks_gpu.md, "float16")."""
        with torch.no_grad():  # the squared norm has the same argmax; float32 so squares cannot overflow
            sq = squared_norms(at_least_float32(xb), d)
            return F.max_pool3d(sq, self.stride, return_indices=True)[1]


class MeanPool3d(_WindowPool):
    r"""Equivariant mean pooling with window = stride: every channel of every irrep averaged over the window.

    Linear and the same for every component, so it commutes with any ``D(R)`` (``0o`` and reflections
    included); the window average is symmetric under the window's flips and axis swaps, so it is exact on
    the same grid symmetries as ``NormMaxPool3d`` (every pooled axis divisible by its stride, equal strides
    along permuted axes). It is a box filter of ``stride`` taps followed by subsampling at the windows'
    starts: the grid-symmetric form of "blur, then keep every ``stride``-th voxel" (plain strided subsampling
    of an even axis is not symmetric under its flip). Unlike the norm max it is continuous in its input
    and keeps no indices; it is not band-limited (a box filter: place a ``GaussianBlur3d`` before it for
    that, ``E3nnSpec.antialias``). An off-grid option (docs/offgrid_real_anatomy.md, "mean pooling").

    Convention: ``(batch, irreps.dim, x, y, z)`` -> ``(batch, irreps.dim, x / sx, y / sy, z / sz)``;
    ``stride`` per spatial axis (x, y, z) or one int.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, irreps.dim, x, y, z)`` -> ``(batch, irreps.dim, x / sx, y / sy, z / sz)``."""
        self._check(x)
        return F.avg_pool3d(x, self.stride)


#: ``E3nnSpec.pooling``'s values: the pooling module each names
POOLINGS = {"norm_max": NormMaxPool3d, "mean": MeanPool3d}


def make_pool(pooling: str, irreps, stride: int | Sequence[int]) -> NormMaxPool3d | MeanPool3d:
    """The pooling ``POOLINGS[pooling]`` of ``irreps`` with window = ``stride``; ``ValueError`` naming an
    unknown ``pooling``."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
    return POOLINGS[pooling](irreps, stride)
