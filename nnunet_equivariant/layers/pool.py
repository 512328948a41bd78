"""NormMaxPool3d: max pooling of irreps fields, scalars by value and every other irrep by its norm."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._irreps import at_least_float32, blocks, check_field, parse_irreps, squared_norms

__all__ = ["NormMaxPool3d"]


class NormMaxPool3d(nn.Module):
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
        super().__init__()
        self.irreps = parse_irreps(irreps, "irreps")
        self.irreps_in = self.irreps_out = self.irreps
        stride = (stride,) * 3 if isinstance(stride, int) else tuple(int(s) for s in stride)
        if len(stride) != 3 or min(stride) < 1:
            raise ValueError(f"stride must be a positive int or three positive ints, got {stride}")
        self.stride = stride
        self._dim = self.irreps.dim
        self._blocks = blocks(self.irreps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, irreps.dim, x, y, z)`` -> ``(batch, irreps.dim, x / sx, y / sy, z / sz)``."""
        check_field(x, self._dim, self.irreps)
        if any(n % s for n, s in zip(x.shape[2:], self.stride)):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} is not divisible by the pooling stride "
                             f"{self.stride}: pooling would drop voxels and break equivariance")
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

    def extra_repr(self) -> str:
        return f"{self.irreps}, stride={self.stride}"
