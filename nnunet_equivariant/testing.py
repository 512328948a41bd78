"""Equivariance helpers for voxel networks: exact grid symmetries and error measures.

Reusable by users to check their own networks (``assert_equivariant(net, x, ...)``).

Convention
----------
- A volume is a tensor ``(batch, channels, x, y, z)``; spatial dims 2, 3, 4 are the axes x, y, z.
- A grid symmetry is a 3x3 signed permutation matrix ``R`` acting on centred voxel coordinates
  ``p = (x, y, z)``. Transforming a field ``f`` gives ``(R f)(p) = D(R) f(R^-1 p)``, where ``D(R)`` is the
  representation of the channels: identity for plain scalars, ``irreps.D_from_matrix(R)`` for e3nn irreps
  (l = 1 components in (x, y, z) order, so ``D(R) = R`` for ``1o``); use ``irreps_D`` for float64.
- ``grid_rotations()`` gives the 24 rotations of the cube (SO(3) on the grid); ``grid_symmetries()``
  adds the 24 improper ones (48, O(3) on the grid).
- The grid elements and their action on volumes (``transform_volume``) are the group's, defined in
  :mod:`nnunet_equivariant.symmetry` and re-exported here; this module only adds the error measures.
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import torch

from .symmetry import flip_matrix, grid_rotations, grid_symmetries, transform_volume

__all__ = [
    "grid_symmetries",
    "grid_rotations",
    "axis_flips",
    "flips_of",
    "all_flip_sets",
    "transform_volume",
    "irreps_D",
    "tolerance",
    "equivariance_error",
    "assert_equivariant",
    "plans_configuration",
]


def axis_flips(axes: Sequence[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Matrix of the reflection that flips the given spatial axes (0 = x = tensor dim 2, ...)."""
    return flip_matrix(axes, dtype)


def all_flip_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes`` (the flip sets nnU-Net's predictor averages over), empty set first."""
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def flips_of(axes: Sequence[int], dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """Reflection matrices of every non-empty subset of ``axes`` (data axes 0..2)."""
    return [flip_matrix(c, dtype) for c in all_flip_sets(axes)[1:]]


def tolerance(dtype: torch.dtype) -> float:
    """Relative error below which an op counts as exactly equivariant in ``dtype``."""
    return {torch.float64: 1e-5, torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]


def irreps_D(irreps, R: torch.Tensor) -> torch.Tensor:
    """``irreps.D_from_matrix(R)`` computed in float64.

    e3nn builds D in the default dtype, which in float32 is only accurate to ~1e-7: too coarse for
    float64 equivariance tests.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return irreps.D_from_matrix(R.to(torch.float64))
    finally:
        torch.set_default_dtype(previous)


def _as_D(rep, R: torch.Tensor) -> torch.Tensor | None:
    if rep is None:
        return None
    if callable(getattr(rep, "D_from_matrix", None)):
        return irreps_D(rep, R)
    if callable(rep):
        return rep(R)
    raise ValueError(f"representation must be None, e3nn Irreps or a callable R -> D, got {rep!r}")


def equivariance_error(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    R: torch.Tensor,
    rep_in=None,
    rep_out=None,
) -> float:
    """Relative error ``|f(R x) - R f(x)| / |f(x)|`` of ``f`` under the grid symmetry ``R``.

    ``rep_in`` / ``rep_out``: ``None`` (scalars), e3nn ``Irreps``, or a callable ``R -> D`` matrix.
    ``f`` may return a tensor or a list/tuple of tensors (deep supervision); all are compared.
    """
    R = R.to(torch.float64)
    fx = f(x)
    frx = f(transform_volume(x, R, _as_D(rep_in, R)))
    outs_a = fx if isinstance(fx, (list, tuple)) else [fx]
    outs_b = frx if isinstance(frx, (list, tuple)) else [frx]
    num = sum(((transform_volume(a, R, _as_D(rep_out, R)) - b) ** 2).sum() for a, b in zip(outs_a, outs_b))
    den = sum((a ** 2).sum() for a in outs_a)
    return float(torch.sqrt(num / den.clamp_min(torch.finfo(den.dtype).tiny)))


def assert_equivariant(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    symmetries: Sequence[torch.Tensor] | None = None,
    rep_in=None,
    rep_out=None,
    tol: float | None = None,
) -> float:
    """Assert that ``f`` commutes with every grid symmetry given (default: the 24 rotations).

    Returns the largest relative error seen. Raises ``AssertionError`` naming the worst matrix.
    """
    symmetries = grid_rotations() if symmetries is None else symmetries
    tol = tolerance(x.dtype) if tol is None else tol
    worst, worst_R = 0.0, None
    with torch.no_grad():
        for R in symmetries:
            err = equivariance_error(f, x, R, rep_in, rep_out)
            if err > worst:
                worst, worst_R = err, R
    assert worst <= tol, (
        f"output does not transform with the input: relative error {worst:.3g} > {tol:.1g} "
        f"for the grid symmetry {worst_R.tolist() if worst_R is not None else None}"
    )
    return worst


def plans_configuration(strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]] | None,
                        features: Sequence[int], n_conv: int = 2, patch_size: Sequence[int] | None = None,
                        spacing: Sequence[float] | None = None,
                        conv_op: str = "torch.nn.modules.conv.Conv3d",
                        network: str = "dynamic_network_architectures.architectures.unet.PlainConvUNet"):
    """A plans configuration (nnU-Net's ``ConfigurationManager``) as nnU-Net's default planner writes it:
    a ``PlainConvUNet`` with the given per-stage ``strides``, ``kernel_sizes`` (``None``: 3 on every axis)
    and ``features``, to build networks from plans in tests; ``patch_size`` and ``spacing`` are only written
    when given (a network builder that needs them then fails as it would on such plans)."""
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    n = len(strides)
    kernel_sizes = [[3] * len(strides[0])] * n if kernel_sizes is None else kernel_sizes
    configuration = {"batch_size": 2, "data_identifier": "tests", "architecture": {
        "network_class_name": network,
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": features, "conv_op": conv_op, "kernel_sizes": kernel_sizes,
            "strides": strides, "n_conv_per_stage": [n_conv] * n, "n_conv_per_stage_decoder": [n_conv] * (n - 1),
            "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }}
    if patch_size is not None:
        configuration["patch_size"] = list(patch_size)
    if spacing is not None:
        configuration["spacing"] = list(spacing)
    return ConfigurationManager(configuration)
