"""GaussianBlur3d: a separable Gaussian low-pass of every channel alike (anti-aliasing for pooling/upsampling)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GaussianBlur3d"]

# The sampled Gaussian is cut at this many standard deviations (the tail beyond holds < 0.3 % of its mass).
_TRUNCATE = 3.0


class GaussianBlur3d(nn.Module):
    """Separable Gaussian blur with standard deviation ``sigma`` voxels per axis (x, y, z); 0 leaves an axis.

    Every channel is blurred the same way, so the blur commutes with any channel representation ``D(R)``;
    its sampled kernel is symmetric under flips, and equal along axes with equal ``sigma``, so it commutes
    with the grid symmetries that keep ``sigma`` (all 48 for an isotropic one). An isotropic Gaussian
    commutes with every rotation in the continuum: placed before a pooling (or after an upsampling) it
    removes the frequencies the coarser grid cannot hold, which would otherwise alias differently for
    every pose. Borders are padded by replication (flip-symmetric, and no dark rim at the patch edge).

    Convention: ``(batch, C, x, y, z)`` -> same shape, same dtype.
    """

    def __init__(self, sigma: float | Sequence[float]):
        super().__init__()
        sigma = (float(sigma),) * 3 if isinstance(sigma, (int, float)) else tuple(float(s) for s in sigma)
        if len(sigma) != 3 or not all(s >= 0 and math.isfinite(s) for s in sigma):
            raise ValueError(f"sigma must be one or three non-negative finite numbers (voxels), got {sigma}")
        self.sigma = sigma
        self._radius = tuple(int(math.ceil(_TRUNCATE * s)) if s > 0 else 0 for s in sigma)
        for axis, (s, r) in enumerate(zip(sigma, self._radius)):
            taps = torch.ones(1, dtype=torch.float64)
            if r > 0:
                taps = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / s) ** 2)
            self.register_buffer(f"taps_{axis}", (taps / taps.sum()).to(torch.get_default_dtype()),
                                 persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"GaussianBlur3d expects (batch, C, x, y, z), got shape {tuple(x.shape)}")
        channels = x.shape[1]
        for axis, r in enumerate(self._radius):
            if r == 0:
                continue
            pad = [0] * 6
            pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r  # F.pad lists the last axis first
            shape = [1, 1, 1]
            shape[axis] = 2 * r + 1
            taps = getattr(self, f"taps_{axis}").to(x.dtype).view(1, 1, *shape).expand(channels, 1, *shape)
            x = F.conv3d(F.pad(x, pad, mode="replicate"), taps, groups=channels)
        return x

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"
