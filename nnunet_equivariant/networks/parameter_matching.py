"""Widths that give a network a target parameter count (the paper's "keep the number of parameters").

A symmetric kernel has fewer free entries than a plain one, so a symmetric network with the baseline's
widths has fewer parameters. To compare at equal size, every layer width is scaled by one common factor
(so the shape of the network, e.g. nnU-Net's doubling per stage, is kept) and, optionally, the last
width alone is then fine-tuned to absorb the rounding of the others.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["count_parameters", "match_widths"]


def count_parameters(build: Callable[[], nn.Module]) -> int:
    """Number of parameters of the module ``build()`` returns, built on the meta device (no memory, no
    initialisation cost)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def match_widths(base_widths: Sequence[int], count: Callable[[tuple[int, ...]], int], target: int,
                 absorb_last: bool = True) -> tuple[int, ...]:
    """Widths ``round(s * base_widths)`` whose ``count(widths)`` is closest to ``target``.

    ``count`` must grow with every width (a parameter count does). The common factor ``s`` is found by
    bisection; with ``absorb_last`` the last width is then chosen on its own, with the others fixed, so
    the error is at most half the parameters one unit of the last width costs. Raises ``ValueError`` if
    ``target`` is below the count of width 1 everywhere.
    """
    base = [int(w) for w in base_widths]
    if not base or min(base) < 1:
        raise ValueError(f"base widths must be positive integers, got {list(base_widths)}")
    count = functools.cache(count)  # bisection revisits the same rounded widths

    def scaled(s: float) -> tuple[int, ...]:
        return tuple(max(1, round(s * w)) for w in base)

    if count(scaled(0.0)) > target:
        raise ValueError(f"target {target} is below the smallest network ({count(scaled(0.0))} parameters)")
    lo, hi = 0.0, 1.0
    while count(scaled(hi)) < target:
        lo, hi = hi, 2 * hi
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(scaled(mid)) < target else (lo, mid)
    candidates = {scaled(lo), scaled(hi)}
    if absorb_last:
        candidates |= {_best_last_width(w, count, target) for w in list(candidates)}
    return min(sorted(candidates), key=lambda w: abs(count(w) - target))


def _best_last_width(widths: tuple[int, ...], count: Callable[[tuple[int, ...]], int], target: int):
    def with_last(n: int) -> tuple[int, ...]:
        return (*widths[:-1], n)

    lo, hi = 1, max(2, widths[-1])
    while count(with_last(hi)) < target:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # smallest n with count >= target lies in (lo, hi]
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(with_last(mid)) < target else (lo, mid)
    return min((with_last(lo), with_last(hi)), key=lambda w: abs(count(w) - target))
