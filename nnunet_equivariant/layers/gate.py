"""EquivariantGate: gated nonlinearity on channels-first voxel fields."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from e3nn import o3
from torch import nn

from ._irreps import blocks, check_field, parse_irreps

__all__ = ["EquivariantGate"]

LEAKY_RELU_SLOPE = 0.01  # nnU-Net's LeakyReLU default

#: The even-scalar activations a gate takes, by name.
SCALAR_ACTIVATIONS = {
    "leaky_relu": lambda x: F.leaky_relu(x, LEAKY_RELU_SLOPE),  # nnU-Net's nonlinearity
    "relu": F.relu,
    "silu": F.silu,
}


class EquivariantGate(nn.Module):
    r"""Gated nonlinearity (Weiler et al. 2018), channels first, without layout copies.

    .. math::

        y = \big(\sigma_0(s),\; \operatorname{sigmoid}(g_1)\, v_1,\; \dots,\; \operatorname{sigmoid}(g_n)\, v_n\big)

    Input irreps are ``irreps_scalars + gates + irreps_gated`` where ``gates`` is one ``0e`` per copy of a
    gated irrep (in the order of ``irreps_gated``); output irreps are ``irreps_scalars + irreps_gated``.
    Even scalars (``0e``) go through ``scalar_activation``; odd scalars (``0o``) through ``tanh`` (an odd
    function keeps them odd under reflections). Named ``EquivariantGate`` to keep it apart from e3nn's
    ``Gate``, which works channels-last on point clouds.

    Conditions: ``irreps_scalars`` holds only ``l = 0`` irreps, ``irreps_gated`` only ``l > 0`` irreps;
    ``scalar_activation`` is one of ``"leaky_relu"`` (nnU-Net's, slope 0.01), ``"relu"``, ``"silu"``.

    >>> gate = EquivariantGate("8x0e", "4x1e + 2x2e")
    >>> gate.irreps_in, gate.irreps_out
    (8x0e+6x0e+4x1e+2x2e, 8x0e+4x1e+2x2e)
    """

    def __init__(self, irreps_scalars, irreps_gated, scalar_activation: str = "leaky_relu"):
        super().__init__()
        self.irreps_scalars = parse_irreps(irreps_scalars, "irreps_scalars", allow_empty=True)
        self.irreps_gated = parse_irreps(irreps_gated, "irreps_gated", allow_empty=True)
        if any(ir.l != 0 for _, ir in self.irreps_scalars):
            raise ValueError(f"irreps_scalars must hold only l = 0 irreps, got {self.irreps_scalars}")
        if any(ir.l == 0 for _, ir in self.irreps_gated):
            raise ValueError(f"irreps_gated must hold only l > 0 irreps, got {self.irreps_gated}")
        if scalar_activation not in SCALAR_ACTIVATIONS:
            raise ValueError(f"scalar_activation must be one of {sorted(SCALAR_ACTIVATIONS)}, "
                             f"got {scalar_activation!r}")
        self.scalar_activation = scalar_activation
        num_gates = self.irreps_gated.num_irreps
        self.irreps_gates = o3.Irreps(f"{num_gates}x0e") if num_gates else o3.Irreps("")
        self.irreps_in = self.irreps_scalars + self.irreps_gates + self.irreps_gated
        self.irreps_out = self.irreps_scalars + self.irreps_gated
        self._dim_in = self.irreps_in.dim
        self._scalar_blocks = blocks(self.irreps_scalars)
        self._gated_blocks = blocks(self.irreps_gated)
        # channel sections of the input: each scalar block, the gates, each gated block
        self._sections = [b.dim for b in self._scalar_blocks] + ([num_gates] if num_gates else []) \
            + [b.dim for b in self._gated_blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, irreps_in.dim, x, y, z)`` -> ``(batch, irreps_out.dim, x, y, z)``."""
        check_field(x, self._dim_in, self.irreps_in)
        act = SCALAR_ACTIVATIONS[self.scalar_activation]
        pieces = x.split(self._sections, 1)  # views; one gradient tensor in backward
        scalar_pieces = pieces[:len(self._scalar_blocks)]
        parts = [act(s) if b.p == 1 else torch.tanh(s) for s, b in zip(scalar_pieces, self._scalar_blocks)]
        if self._gated_blocks:
            gates = torch.sigmoid(pieces[len(self._scalar_blocks)])
            copy = 0
            for v, b in zip(pieces[len(self._scalar_blocks) + 1:], self._gated_blocks):
                g = gates[:, copy:copy + b.mul].unsqueeze(2)
                parts.append((v.unflatten(1, (b.mul, b.d)) * g).flatten(1, 2))
                copy += b.mul
        return torch.cat(parts, dim=1)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}, scalar_activation={self.scalar_activation}"
