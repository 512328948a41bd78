"""TrilinearUpsample: upsampling of every channel, equivariant for any irreps."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TrilinearUpsample"]


class TrilinearUpsample(nn.Module):
    """Trilinear upsampling by an integer factor per axis (``align_corners=False``), every channel alike.

    It acts on each channel the same way, so it commutes with any channel representation ``D(R)``, and its
    sampling scheme is symmetric under flips, so it commutes with the grid symmetries that keep the
    factors (equal factors along axes a symmetry permutes). ``(batch, C, x, y, z)`` ->
    ``(batch, C, x * fx, y * fy, z * fz)``.
    """

    def __init__(self, scale_factor: int | Sequence[int]):
        super().__init__()
        scale = (scale_factor,) * 3 if isinstance(scale_factor, int) else tuple(int(s) for s in scale_factor)
        if len(scale) != 3 or min(scale) < 1:
            raise ValueError(f"scale_factor must be a positive int or three positive ints, got {scale_factor}")
        self.scale_factor = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_factor == (1, 1, 1):
            return x
        return F.interpolate(x, scale_factor=self.scale_factor, mode="trilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"scale_factor={self.scale_factor}"
