"""Irreps parsing and channel blocks shared by the equivariant layers (private)."""
from __future__ import annotations

from typing import NamedTuple

import torch
from e3nn import o3

__all__ = ["Block", "parse_irreps", "blocks", "squared_norms", "norms", "check_field"]


class Block(NamedTuple):
    """``mul`` copies of the irrep ``(l, p)`` stored in channels ``start : start + mul * (2l + 1)``.

    Plain ints (no e3nn objects), so torch.compile can guard on the layers' layouts.
    """

    start: int
    mul: int
    l: int  # noqa: E741
    p: int

    @property
    def d(self) -> int:
        """Dimension ``2l + 1`` of one copy."""
        return 2 * self.l + 1

    @property
    def dim(self) -> int:
        return self.mul * self.d

    @property
    def stop(self) -> int:
        return self.start + self.dim

    @property
    def ir(self) -> o3.Irrep:
        return o3.Irrep(self.l, self.p)

    @property
    def is_even_scalar(self) -> bool:
        """``0e``: the only irrep that may be shifted, biased or pooled by value."""
        return self.l == 0 and self.p == 1


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
        if out and (out[-1].l, out[-1].p) == (ir.l, ir.p) and out[-1].stop == start:
            out[-1] = out[-1]._replace(mul=out[-1].mul + mul)
        else:
            out.append(Block(start, mul, ir.l, ir.p))
        start += mul * ir.dim
    return out


def squared_norms(v: torch.Tensor, ir_dim: int) -> torch.Tensor:
    """``(batch, mul, x, y, z)`` squared l2 norms of a block ``(batch, mul * ir_dim, x, y, z)``."""
    return _SquaredNorms.apply(v, ir_dim)


def norms(v: torch.Tensor, ir_dim: int) -> torch.Tensor:
    """``(batch, mul, x, y, z)`` l2 norms of a block, clamped away from 0 so that the gradient stays finite
    where a copy is exactly zero (e.g. zero-padded input)."""
    sq = squared_norms(v, ir_dim)
    return sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt()


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself in float32 / float64, else upcast to float32 (statistics of half-precision fields)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def component_dot(a: torch.Tensor, b: torch.Tensor, d: int) -> torch.Tensor:
    """Per-copy dot product of two blocks ``(batch, mul * d, x, y, z)`` -> ``(batch, mul, x, y, z)``, as a
    chain of ``addcmul`` over the ``d`` components."""
    a, b = a.unflatten(1, (-1, d)), b.unflatten(1, (-1, d))
    out = a[:, :, 0] * b[:, :, 0]
    for m in range(1, d):
        out = torch.addcmul(out, a[:, :, m], b[:, :, m])
    return out


class _SquaredNorms(torch.autograd.Function):
    """Forward: ``component_dot(v, v)`` (PyTorch's ``vector_norm`` over the small component dim of a
    strided view measured ~50x slower in development, docs/benchmarks_e3nn.md). Backward: one ``2 v g``
    (autograd through the component slices would zero-fill a full-size gradient per component)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, ir_dim: int) -> torch.Tensor:
        ctx.save_for_backward(v)
        ctx.ir_dim = ir_dim
        return component_dot(v, v, ir_dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (v,) = ctx.saved_tensors
        return (2 * v.unflatten(1, (-1, ctx.ir_dim)) * grad.unsqueeze(2)).flatten(1, 2), None


def check_field(x: torch.Tensor, dim: int, irreps) -> None:
    """``ValueError`` unless ``x`` is a ``(batch, dim, x, y, z)`` field (``dim`` a precomputed int, so that
    compiled code guards on ints, not on e3nn objects)."""
    if x.dim() != 5 or x.shape[1] != dim:
        raise ValueError(f"expected input (batch, {dim}, x, y, z) for irreps {irreps}, got shape {tuple(x.shape)}")
