"""EquivariantInstanceNorm: instance normalisation of irreps fields as one fused affine map."""
from __future__ import annotations

import torch
from torch import nn

from ._irreps import at_least_float32, blocks, check_field, norms, parse_irreps

__all__ = ["EquivariantInstanceNorm"]


class EquivariantInstanceNorm(nn.Module):
    r"""Instance norm for irreps fields (Diaz et al.; equivalent to escnn's ``IIDBatchNorm`` per instance).

    - ``0e`` channels: ordinary instance norm, ``(s - mean) / sqrt(var + eps) * weight + bias``.
    - every other irrep copy ``v`` (``l > 0``, and odd scalars ``0o``, which may not be shifted):
      ``v / (mean_x |v|(x) + eps) * weight``, the mean of the copy's l2 norm over space; no bias.

    Statistics are per sample and per channel/copy over the spatial dims. The result is applied as one
    per-(sample, channel) affine map ``x * a + b`` over the whole tensor, so the layer stores a single
    output (no per-block pieces, no channels-last copies).

    Convention: ``(batch, irreps.dim, x, y, z)``, e3nn's copy-major layout. ``weight`` has one entry per
    ``0e`` channel and per copy of every other irrep; ``bias`` one per ``0e`` channel.
    """

    def __init__(self, irreps, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.irreps = parse_irreps(irreps, "irreps")
        self.irreps_in = self.irreps_out = self.irreps
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.eps = float(eps)
        self._dim = self.irreps.dim
        self._blocks = blocks(self.irreps)
        self._scalar = [b.is_even_scalar for b in self._blocks]
        num_scalars = sum(b.mul for b, s in zip(self._blocks, self._scalar) if s)
        num_copies = sum(b.mul for b in self._blocks)
        if affine:
            self.weight = nn.Parameter(torch.ones(num_copies))
            self.bias = nn.Parameter(torch.zeros(num_scalars))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, irreps.dim, x, y, z)`` -> same shape."""
        check_field(x, self._dim, self.irreps)
        # statistics in float32 at least: squares and variances of float16 activations overflow
        stats = at_least_float32(x)
        scales, shifts = [], []
        copy = scalar = 0
        # split (not slicing): its backward writes one gradient tensor instead of a zero-filled one per block
        for xb, b, is_scalar in zip(stats.split([b.dim for b in self._blocks], 1), self._blocks, self._scalar):
            weight = self.weight[copy:copy + b.mul] if self.weight is not None else None
            if is_scalar:
                var, mean = torch.var_mean(xb, dim=(2, 3, 4), unbiased=False)  # (batch, mul)
                scale = torch.rsqrt(var + self.eps)
                shift = -mean * scale
                if weight is not None:
                    scale, shift = scale * weight, shift * weight + self.bias[scalar:scalar + b.mul]
                scalar += b.mul
            else:
                mean_norm = norms(xb, b.d).mean(dim=(2, 3, 4))  # (batch, mul)
                scale = 1.0 / (mean_norm + self.eps)
                if weight is not None:
                    scale = scale * weight
                scale = scale.repeat_interleave(b.d, dim=1)
                shift = torch.zeros_like(scale)
            scales.append(scale)
            shifts.append(shift)
            copy += b.mul
        scale = torch.cat(scales, 1)[:, :, None, None, None]
        shift = torch.cat(shifts, 1)[:, :, None, None, None]
        if stats is x:  # float32 / float64
            return torch.addcmul(shift, x, scale)
        return _HalfAffine.apply(x, scale, shift)

    def extra_repr(self) -> str:
        return f"{self.irreps}, eps={self.eps}, affine={self.weight is not None}"


class _HalfAffine(torch.autograd.Function):
    """``x * scale + shift`` for a half-precision ``x`` and float32 per-channel ``scale`` / ``shift`` ``(batch,
    C, 1, 1, 1)``, output in ``x``'s dtype. Through autograd the gradients of ``scale`` and ``shift`` would be
    sums over the patch in float16, which overflow (65504) on a patch of 128^3 voxels, the more so under a
    ``GradScaler``; here they are accumulated and returned in float32. Traced as is by ``torch.compile``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, scale)
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, scale = ctx.saved_tensors
        grad_scale = torch.sum(grad * x, dim=(2, 3, 4), keepdim=True, dtype=scale.dtype)
        grad_shift = torch.sum(grad, dim=(2, 3, 4), keepdim=True, dtype=scale.dtype)
        return grad * scale.to(grad.dtype), grad_scale, grad_shift
