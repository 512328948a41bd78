"""``SteerableResidualBlock``: the steerable counterpart of dynamic-network-architectures' ``BasicBlockD``,
the unit nnU-Net's residual-encoder U-Nets (ResEnc M/L/XL plans) stack in every encoder stage."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from e3nn import o3
from torch import nn

from ._irreps import parse_irreps
from .gate import EquivariantGate
from .norm import EquivariantInstanceNorm
from .pool import make_pool
from .steerable_block import SteerableBlock
from .steerable_conv import DEFAULT_RADIAL_BASIS, SteerableConv3d

__all__ = ["SteerableResidualBlock"]


class SteerableResidualBlock(nn.Module):
    r"""Equivariant residual block (``BasicBlockD``'s layout, Weiler et al.'s gate)::

        x -- [NormMaxPool3d(stride)] --+-- SteerableConv3d -- Norm -- Gate -- SteerableConv3d -- Norm --(+)-- Gate --> y
                                       +-- identity, or SteerableConv3d(1x1x1) -- Norm -----------------+

    .. math::

        y = \operatorname{gate}\big(\operatorname{norm}_2(\operatorname{conv}_2(
            \operatorname{block}_1(p))) + \operatorname{skip}(p)\big), \qquad p = \operatorname{pool}(x)

    The nonlinearity sits **after the sum**, as in ``BasicBlockD`` (``nonlin2(conv2(conv1(x)) + skip(x))``);
    the first half ``block_1`` is a ``SteerableBlock`` (conv -- norm -- gate). The second convolution outputs
    ``irreps_out``'s scalars, one gate scalar per copy of a non-scalar irrep, and the non-scalar irreps (the
    final gate's input); the skip path adds to the scalars and the non-scalar irreps, and the gate scalars
    come from the residual path alone (the skip has none). Every term transforms like ``irreps_out``, so
    the sum and the gate are equivariant.

    Conditions and choices:

    1. ``stride``: the block downsamples with a ``NormMaxPool3d`` (``pooling="norm_max"``, the default) or a
       ``MeanPool3d`` (``pooling="mean"``) before both paths (one pooled input; no
       strided convolution, whose odd kernel would sit off-centre on the even lengths nnU-Net plans and
       break the grid symmetries). ``BasicBlockD`` strides its first convolution and average-pools its skip.
    2. The skip is the identity when ``irreps_in`` equals the output irreps, else a pointwise equivariant
       linear map (``SteerableConv3d`` with ``kernel_size=1``) and an ``EquivariantInstanceNorm``, like
       ``BasicBlockD``'s ``1x1 conv -- norm`` projection. A pointwise map reaches only irrep types present
       in ``irreps_in``: output irreps of other types (the vectors of a block fed by scalars only) get no
       skip term.
    3. ``spacing``: the voxel size (mm) the convolutions see, i.e. after the pooling; kernels are balls of
       ``kernel_size`` voxels along the finest axis (see ``SteerableConv3d``).
    4. The output irreps are ``irreps_out`` with scalars first (the gate's layout); ``irreps_out`` must hold
       at least one scalar or one non-scalar irrep.

    Convention: ``(batch, irreps_in.dim, x, y, z)`` -> ``(batch, irreps_out.dim, x / sx, y / sy, z / sz)``;
    l = 1 components in (x, y, z) order of the tensor's spatial dims 2, 3, 4.

    >>> block = SteerableResidualBlock("4x0e + 2x1e", "8x0e + 4x1e + 2x2e", kernel_size=3, spacing=(1, 1, 1),
    ...                                parity=False, stride=2)
    >>> block.irreps_out, block.skip is not None
    (8x0e+4x1e+2x2e, True)
    """

    def __init__(self, irreps_in, irreps_out, kernel_size: int, spacing: Sequence[float], parity: bool,
                 num_radial_basis: int = 5, lmax: int = 2, scalar_activation: str = "leaky_relu",
                 radial_basis: str = DEFAULT_RADIAL_BASIS, stride: int | Sequence[int] = 1,
                 pooling: str = "norm_max"):
        super().__init__()
        irreps_in = parse_irreps(irreps_in, "irreps_in")
        irreps_out = parse_irreps(irreps_out, "irreps_out")
        stride = (stride,) * 3 if isinstance(stride, (int, np.integer)) else tuple(int(s) for s in stride)
        if len(stride) != 3 or min(stride) < 1:
            raise ValueError(f"stride must be a positive int or three positive ints, got {stride}")
        self.stride = stride
        self.pool = make_pool(pooling, irreps_in, stride) if stride != (1, 1, 1) else None
        conv_kwargs = dict(kernel_size=kernel_size, spacing=spacing, parity=parity,
                           num_radial_basis=num_radial_basis, lmax=lmax, radial_basis=radial_basis)
        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l > 0])
        self.gate = EquivariantGate(scalars, gated, scalar_activation)
        self.irreps_in, self.irreps_out = irreps_in, self.gate.irreps_out
        self.block1 = SteerableBlock(irreps_in, self.irreps_out, scalar_activation=scalar_activation, **conv_kwargs)
        self.conv2 = SteerableConv3d(self.irreps_out, self.gate.irreps_in, bias=False, **conv_kwargs)
        self.norm2 = EquivariantInstanceNorm(self.gate.irreps_in)
        # the skip's channels inside the gate's input: scalars [0, ns), gate scalars [ns, ns + ng), gated after
        ns, ng = self.gate.irreps_scalars.dim, self.gate.irreps_gates.dim
        kept, channels, start = [], [], 0
        for mul, ir in self.irreps_out:
            if ir in {i for _, i in irreps_in}:  # a pointwise equivariant map reaches only irreps it has
                kept.append((mul, ir))
                channels += [c if c < ns else c + ng for c in range(start, start + mul * ir.dim)]
            start += mul * ir.dim
        if irreps_in == self.irreps_out:
            self.skip = None
        else:
            irreps_skip = o3.Irreps(kept)
            self.skip = nn.Sequential(SteerableConv3d(irreps_in, irreps_skip, kernel_size=1, parity=parity,
                                                      bias=False),
                                      EquivariantInstanceNorm(irreps_skip)) if kept else None
        self.register_buffer("_skip_channels", torch.tensor(channels, dtype=torch.long), persistent=False)
        self.constant_buffers = ("_skip_channels",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, irreps_in.dim, x, y, z)`` -> ``(batch, irreps_out.dim, x / sx, y / sy, z / sz)``."""
        if self.pool is not None:
            x = self.pool(x)
        out = self.norm2(self.conv2(self.block1(x)))
        if len(self._skip_channels):
            out = out.index_add(1, self._skip_channels, x if self.skip is None else self.skip(x))
        return self.gate(out)

    def zero_init_last_norm(self) -> None:
        """Set the second norm's scale and shift to 0, so the block starts as its skip path followed by the
        gate (nnU-Net's ``init_last_bn_before_add_to_0`` for ``BasicBlockD``)."""
        with torch.no_grad():
            self.norm2.weight.zero_()
            self.norm2.bias.zero_()

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Activation values per sample the block stores at input size ``input_size`` (x, y, z): the pooled
        input, the first block's conv/norm/gate outputs, the second convolution and norm, the skip's
        projection and norm, the sum and the gate (the unit ``E3nnUNet`` counts in)."""
        size = np.array(input_size, dtype=np.int64) // np.array(self.stride)
        voxels = int(np.prod(size))
        total = self.irreps_in.dim * voxels if self.pool is not None else 0
        total += (2 * self.block1.conv.irreps_out.dim + self.irreps_out.dim) * voxels  # conv, norm, gate
        total += 3 * self.gate.irreps_in.dim * voxels  # conv2, norm2, the sum
        if self.skip is not None:
            total += 2 * self.skip[0].irreps_out.dim * voxels
        return total + self.irreps_out.dim * voxels

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}, stride={self.stride}"
