"""Lateralised label names: which labels name a side, and the merged label set of laterality mode.

A label names a side when exactly one of its words (split at non-alphanumerics and camelCase) is a side
token (``LEFT_TOKENS`` / ``RIGHT_TOKENS``) and other words remain: ``left_kidney``, ``Kidney_L``,
``l_hippo``, ``LeftLung``, ``kidney right``. The remaining words, joined by ``_``, are its base name.
"""
from __future__ import annotations

import re
from typing import Mapping

__all__ = ["LEFT_TOKENS", "RIGHT_TOKENS", "label_side", "lateralised_labels", "merge_plan"]

LEFT_TOKENS = frozenset({"left", "l", "lt"})
RIGHT_TOKENS = frozenset({"right", "r", "rt"})


def _tokens(name: str) -> list[str]:
    """Words of a label name: split at non-alphanumerics and camelCase (``LeftLung`` -> left, lung)."""
    return [t.lower() for t in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)]


def label_side(name: str) -> tuple[str, str] | None:
    """``("left" | "right", base name)`` if ``name`` names a side (``left_kidney``, ``Kidney_L``, ``l_hippo``,
    ``LeftLung``, ``kidney right``), else ``None``. The base name is the other words joined by ``_``."""
    tokens = _tokens(name)
    sides = [("left" if t in LEFT_TOKENS else "right") for t in tokens if t in LEFT_TOKENS | RIGHT_TOKENS]
    if len(sides) != 1:
        return None
    base = "_".join(t for t in tokens if t not in LEFT_TOKENS | RIGHT_TOKENS)
    return (sides[0], base) if base else None


def lateralised_labels(labels: Mapping[str, object]) -> dict[str, tuple[str, str]]:
    """The labels of a ``dataset.json`` ``labels`` mapping that name a side: ``{name: (side, base)}``."""
    return {name: s for name in labels if name != "background" and (s := label_side(name)) is not None}


def merge_plan(labels: Mapping[str, int]) -> tuple[dict[str, int], dict[int, int], dict[str, dict[str, int]]]:
    """Merged labels of a dataset with lateralised labels (integer label values only, no regions).

    Returns ``(merged_labels, lookup, pairs)``: the new ``labels`` mapping (background 0, then classes in
    order of first value), ``lookup`` old value -> new value, and ``pairs`` merged name -> ``{"left": old
    value, "right": old value}`` (a side may be missing)."""
    for name, value in labels.items():
        if isinstance(value, (list, tuple)) or isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"laterality merge needs integer label values, label {name!r} has {value!r} "
                             f"(region-based datasets are not supported)")
    sides = lateralised_labels(labels)
    if not sides:
        raise ValueError(f"no lateralised labels (names with left/right, l_/r_, _L/_R) in {sorted(labels)}")
    merged: dict[str, int] = {}
    lookup: dict[int, int] = {}
    pairs: dict[str, dict[str, int]] = {}
    for name, value in sorted(labels.items(), key=lambda kv: kv[1]):
        new_name = sides[name][1] if name in sides else name
        if new_name in merged and name not in sides:
            raise ValueError(f"label {name!r} clashes with the merged name of a lateral pair")
        if new_name not in merged:
            merged[new_name] = len(merged)
        lookup[value] = merged[new_name]
        if name in sides:
            side = sides[name][0]
            if side in pairs.setdefault(new_name, {}):
                raise ValueError(f"two {side} labels merge into {new_name!r}: {name!r} and another")
            pairs[new_name][side] = value
    if merged.get("background", 0) != 0 or lookup.get(0, 0) != 0:
        raise ValueError("label 0 must be background")
    return merged, lookup, pairs
