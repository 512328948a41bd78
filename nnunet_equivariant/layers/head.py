"""``InvariantHead``: a pointwise segmentation head that reads every irrep of a field through its invariants."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from e3nn import o3
from torch import nn

from ._irreps import at_least_float32, blocks, check_field, norms, parse_irreps

__all__ = ["InvariantHead"]


class InvariantHead(nn.Module):
    r"""Logits from the rotation invariants of an irreps field, voxel by voxel.

    .. math:: \mathrm{logits}_c = b_c + \sum_i W_{ci}\, s_i + \sum_j W'_{cj}\, \lVert v_j \rVert

    ``s_i`` the even scalars (``0e``) as they are, ``v_j`` every other irrep copy (``l > 0``, and odd scalars
    ``0o``, whose norm is ``|s|``): a norm is unchanged by every rotation and reflection ``D(R)``, so the
    logits are invariant under all of O(3) pointwise, and the network around the head keeps its grid
    equivariance. A head on the ``0e`` channels alone (the paper's, a pointwise ``SteerableConv3d``) sees
    only the field's scalars (8 of 30 channels in nnU-Net's first stage with the 8:4:2 ratio), whatever the
    vectors and tensors carry; this one sees 8 + 4 + 2 = 14 invariants there.

    1. ``irreps_in``: the field's irreps (any, non-empty).
    2. ``num_classes``: logits per voxel, ``>= 1``.

    Weights: ``N(0, 1 / n_invariants)`` (unit output second moment for invariants of unit second moment), bias 0.
    The norms are taken in float32 at least (squares of float16 fields can overflow) and clamped away from
    0 (finite gradients where a copy is exactly zero).

    Convention: ``(batch, irreps_in.dim, x, y, z)`` -> ``(batch, num_classes, x, y, z)``.

    >>> head = InvariantHead("8x0e+4x1e+2x2e", 3)
    >>> head.n_invariants, head(torch.randn(1, 30, 2, 2, 2)).shape
    (14, torch.Size([1, 3, 2, 2, 2]))
    """

    def __init__(self, irreps_in, num_classes: int):
        super().__init__()
        self.irreps_in = parse_irreps(irreps_in, "irreps_in")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.irreps_out = o3.Irreps(f"{num_classes}x0e")
        self.num_classes = num_classes
        self._blocks = blocks(self.irreps_in)
        self._dim = self.irreps_in.dim  # a plain int: torch.compile guards on it, not on e3nn objects
        self.n_invariants = sum(b.mul for b in self._blocks)
        self.weight = nn.Parameter(torch.empty(num_classes, self.n_invariants, 1, 1, 1))
        self.bias = nn.Parameter(torch.empty(num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0 / math.sqrt(self.n_invariants))
            self.bias.zero_()

    def invariants(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, irreps_in.dim, x, y, z)`` -> ``(batch, n_invariants, x, y, z)``: the ``0e`` channels, then
        for every other block the norms of its copies, in the irreps' order."""
        check_field(x, self._dim, self.irreps_in)
        parts = []
        for xb, b in zip(x.split([b.dim for b in self._blocks], 1), self._blocks):
            parts.append(xb if b.is_even_scalar else norms(at_least_float32(xb), b.d).to(xb.dtype))
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, irreps_in.dim, x, y, z)`` -> logits ``(batch, num_classes, x, y, z)``."""
        features = self.invariants(x)
        return F.conv3d(features, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out} ({self.n_invariants} invariants)"
