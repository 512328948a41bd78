"""Irreps parsing and channel blocks shared by the equivariant layers (private)."""
from __future__ import annotations

from typing import NamedTuple

import torch
from e3nn import o3

__all__ = ["Block", "parse_irreps", "blocks", "squared_norms"]


class Block(NamedTuple):
    """``mul`` copies of the irrep ``ir`` stored in channels ``start : start + mul * ir.dim``."""

    start: int
    mul: int
    ir: o3.Irrep

    @property
    def dim(self) -> int:
        return self.mul * self.ir.dim

    @property
    def stop(self) -> int:
        return self.start + self.dim


def parse_irreps(value, name: str, allow_empty: bool = False) -> o3.Irreps:
    """``o3.Irreps(value)``, or a ``ValueError`` naming the argument and the value."""
    try:
        irreps = o3.Irreps(value)
    except (ValueError, TypeError, AssertionError) as e:
        raise ValueError(f"{name}: invalid irreps {value!r} ({e})") from None
    if irreps.dim == 0 and not allow_empty:
        raise ValueError(f"{name}: irreps {value!r} have no channels")
    return irreps


def blocks(irreps: o3.Irreps) -> list[Block]:
    """Channel blocks of ``irreps``, adjacent equal irreps merged, empty entries dropped.

    Layout (e3nn's): copy-major, so copy ``u`` of a block occupies channels
    ``start + u * ir.dim : start + (u + 1) * ir.dim`` (its ``2l + 1`` components in e3nn's order).
    """
    out: list[Block] = []
    start = 0
    for mul, ir in irreps:
        if mul == 0:
            continue
        if out and out[-1].ir == ir and out[-1].stop == start:
            out[-1] = Block(out[-1].start, out[-1].mul + mul, ir)
        else:
            out.append(Block(start, mul, ir))
        start += mul * ir.dim
    return out


def squared_norms(v: torch.Tensor, ir_dim: int) -> torch.Tensor:
    """``(batch, mul, x, y, z)`` squared l2 norms of a block ``(batch, mul * ir_dim, x, y, z)``.

    A chain of ``addcmul`` over the ``2l + 1`` components: PyTorch's ``vector_norm`` over the small
    component dim of a strided view is ~50x slower.
    """
    v = v.unflatten(1, (-1, ir_dim))
    out = v[:, :, 0] * v[:, :, 0]
    for m in range(1, ir_dim):
        out = torch.addcmul(out, v[:, :, m], v[:, :, m])
    return out
