"""``SteerableBlock``: conv -- norm -- gate, the unit the steerable U-Net stacks in every stage (its
counterpart of dynamic-network-architectures' ``ConvDropoutNormReLU``, which ``StackedConvBlocks`` stacks)."""
from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from ._irreps import parse_irreps
from ._norm_gate import norm_gate, norm_gate_layout
from .gate import EquivariantGate
from .norm import EquivariantInstanceNorm
from .steerable_conv import SteerableConv3d

__all__ = ["SteerableBlock"]


class SteerableBlock(nn.Module):
    """``-- SteerableConv3d -- EquivariantInstanceNorm -- EquivariantGate --``

    The convolution outputs ``irreps_hidden``'s scalars, one gate scalar per copy of a non-scalar irrep,
    and the non-scalar irreps; the block outputs ``irreps_hidden``. The convolution has no bias: the
    instance norm right after it removes any constant per channel. In eager mode norm and gate run as one
    autograd node when the irreps allow (see ``layers/_norm_gate.py``): same result, fewer passes and one
    activation-sized tensor less kept for backward; under ``torch.compile`` the composition is traced.
    ``radial_basis``: the convolution's kernel basis (see ``SteerableConv3d``). Networks build blocks through
    their recipe (``E3nnSpec.block``), which holds the defaults.
    """

    def __init__(self, irreps_in, irreps_hidden, kernel_size: int, spacing, parity: bool, num_radial_basis: int,
                 lmax: int, scalar_activation: str, radial_basis: str):
        super().__init__()
        irreps_hidden = parse_irreps(irreps_hidden, "irreps_hidden")
        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l > 0])
        self.gate = EquivariantGate(scalars, gated, scalar_activation)
        self.conv = SteerableConv3d(irreps_in, self.gate.irreps_in, kernel_size, spacing, num_radial_basis, lmax,
                                    parity=parity, bias=False, radial_basis=radial_basis)
        self.norm = EquivariantInstanceNorm(self.gate.irreps_in)
        self.irreps_in, self.irreps_out = self.conv.irreps_in, self.gate.irreps_out
        self._fused = norm_gate_layout(self.norm, self.gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self._fused is None or torch.compiler.is_compiling():
            # compiled: inductor fuses the composition itself (and recomputes it for backward)
            return self.gate(self.norm(x))
        return norm_gate(x, self.norm.weight, self.norm.bias, self._fused)
