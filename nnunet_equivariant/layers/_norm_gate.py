"""``EquivariantGate(EquivariantInstanceNorm(x))`` as one autograd node (private).

Through autograd the composition runs ~15 passes over the activations per training step (statistics,
affine map, activation, gating, concatenation, and their gradients) and keeps the normalised tensor for
the backward pass. This node keeps only its input and per-channel statistics, recomputes the cheap
elementwise parts in the backward pass and uses closed-form gradients: 0.4-0.6x the composition's time
per full-resolution block on a CPU (``benchmarks/bench_e3nn.py`` prints both) and one activation-sized
tensor less per block (tested). ``SteerableBlock`` uses it when the layout allows (all
scalars ``0e``, scalar activation ``leaky_relu`` or ``relu``); ``tests/test_steerable_layers.py`` checks
it against the composition.

Layout of the input ``x`` ``(batch, C, x, y, z)``: ``n0`` even scalars (the gate's scalars, then its gates)
followed by the gated blocks; each gated block ``(mul, d)`` uses ``mul`` consecutive gates.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ._irreps import at_least_float32, component_dot, norms
from .gate import LEAKY_RELU_SLOPE, EquivariantGate
from .norm import EquivariantInstanceNorm

__all__ = ["NormGateLayout", "norm_gate_layout", "norm_gate"]


class NormGateLayout(NamedTuple):
    num_scalars: int  # n_s: 0e channels that go through the activation
    num_gates: int  # n_g: 0e channels that gate the other irreps
    gated: tuple[tuple[int, int], ...]  # (mul, d) of every gated block, in channel order
    slope: float  # leaky_relu's negative slope (0 for relu)
    eps: float


def norm_gate_layout(norm: EquivariantInstanceNorm, gate: EquivariantGate) -> NormGateLayout | None:
    """The fused layout of ``gate(norm(x))``, or ``None`` when the fused node does not apply."""
    if norm.irreps != gate.irreps_in or norm.weight is None or gate.scalar_activation not in ("leaky_relu", "relu"):
        return None
    if any(ir.p != 1 for _, ir in gate.irreps_scalars):
        return None
    slope = LEAKY_RELU_SLOPE if gate.scalar_activation == "leaky_relu" else 0.0
    gated = tuple((b.mul, b.d) for b in gate._gated_blocks)
    return NormGateLayout(gate.irreps_scalars.dim, gate.irreps_gates.dim, gated, slope, norm.eps)


def norm_gate(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, layout: NormGateLayout) -> torch.Tensor:
    """``gate(norm(x))`` with the norm's ``weight`` (one per scalar channel and per gated copy, in channel
    order) and ``bias`` (one per scalar channel)."""
    return _NormGate.apply(x, weight, bias, layout)


def _statistics(x: torch.Tensor, layout: NormGateLayout):
    """Per-sample statistics in float32 at least: 0e mean and 1/std, mean norm of every gated copy."""
    stats = at_least_float32(x)
    n0 = layout.num_scalars + layout.num_gates
    var, mean = torch.var_mean(stats[:, :n0], dim=(2, 3, 4), unbiased=False)  # (batch, n0)
    rstd = torch.rsqrt(var + layout.eps)
    mean_norms = [norms(stats[:, start:start + mul * d], d).mean(dim=(2, 3, 4))
                  for start, mul, d in _gated_blocks(layout)]
    return mean, rstd, mean_norms


def _gated_blocks(layout: NormGateLayout):
    """``(first channel, mul, d)`` of every gated block."""
    start = layout.num_scalars + layout.num_gates
    for mul, d in layout.gated:
        yield start, mul, d
        start += mul * d


def _e(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(batch, n)`` -> ``(batch, n, 1, 1, 1)`` in ``dtype``."""
    return t[:, :, None, None, None].to(dtype)


class _NormGate(torch.autograd.Function):
    """Outputs and input gradients are written into one preallocated tensor each (``out=`` and in-place ops
    on channel views), so no concatenation pass; the backward pass recomputes the normalised scalars and
    the gates from the saved input and statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, layout: NormGateLayout):
        ns, n0, dt = layout.num_scalars, layout.num_scalars + layout.num_gates, x.dtype
        mean, rstd, mean_norms = _statistics(x, layout)
        scale0 = rstd * weight[:n0]
        shift0 = bias - mean * scale0
        out = x.new_empty(x.shape[0], x.shape[1] - layout.num_gates, *x.shape[2:])
        scalars = torch.addcmul(_e(shift0[:, :ns], dt), x[:, :ns], _e(scale0[:, :ns], dt), out=out[:, :ns])
        F.leaky_relu(scalars, layout.slope, inplace=True)
        gates = torch.addcmul(_e(shift0[:, ns:], dt), x[:, ns:n0], _e(scale0[:, ns:], dt)).sigmoid_()
        copy, out_start = 0, ns
        for (start, mul, d), mean_norm in zip(_gated_blocks(layout), mean_norms):
            scale = weight[n0 + copy:n0 + copy + mul] / (mean_norm + layout.eps)  # (batch, mul)
            factor = (gates[:, copy:copy + mul] * _e(scale, dt)).unsqueeze(2)  # (batch, mul, 1, x, y, z)
            torch.mul(x[:, start:start + mul * d].unflatten(1, (mul, d)), factor,
                      out=out[:, out_start:out_start + mul * d].unflatten(1, (mul, d)))
            copy, out_start = copy + mul, out_start + mul * d
        ctx.save_for_backward(x, weight, bias, mean, rstd, *mean_norms)
        ctx.layout = layout
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, mean, rstd, *mean_norms = ctx.saved_tensors
        layout = ctx.layout
        ns, n0, dt = layout.num_scalars, layout.num_scalars + layout.num_gates, x.dtype
        acc = torch.promote_types(weight.dtype, torch.float32)  # reductions and parameter gradients
        n_voxels = x.shape[2] * x.shape[3] * x.shape[4]
        w0 = weight[:n0]
        # recompute the normalised scalars x_hat, the activation's input and the gates
        x_hat = torch.addcmul(_e(-mean * rstd, dt), x[:, :n0], _e(rstd, dt))
        y0 = torch.addcmul(_e(bias[None], dt), x_hat, _e(w0[None], dt))
        grad_y0 = torch.empty_like(x_hat)  # dL/dy for the 0e channels (after the norm's affine map)
        grad_y0[:, :ns] = torch.ops.aten.leaky_relu_backward(grad[:, :ns], y0[:, :ns], layout.slope, False)
        gates = y0[:, ns:].sigmoid()
        grad_x = torch.empty_like(x)
        grad_w_gated = []
        copy, out_start = 0, ns
        for (start, mul, d), mean_norm in zip(_gated_blocks(layout), mean_norms):
            v = x[:, start:start + mul * d].unflatten(1, (mul, d))
            g = grad[:, out_start:out_start + mul * d]
            gate = gates[:, copy:copy + mul]
            w = weight[n0 + copy:n0 + copy + mul]
            denominator = mean_norm + layout.eps  # (batch, mul)
            scale = w / denominator
            dot = component_dot(g, x[:, start:start + mul * d], d)  # <dL/d out, x> per copy and voxel
            torch.ops.aten.sigmoid_backward(dot * _e(scale, dt), gate, grad_input=grad_y0[:, ns + copy:ns + copy + mul])
            # (batch, mul): dL/d scale; summed in float32 at least: over a patch's voxels a float16 sum
            # overflows (and under a GradScaler the gradients are large by design)
            total = torch.sum(gate * dot, dim=(2, 3, 4), dtype=acc)
            grad_w_gated.append((total / denominator).sum(0))
            # dL/dx = scale * gate * g  -  (w * total / (denominator^2 * n)) * x / |x|   (the second term
            # through the mean norm)
            k = w * total / (denominator ** 2 * n_voxels)
            target = grad_x[:, start:start + mul * d].unflatten(1, (mul, d))
            torch.mul(g.unflatten(1, (mul, d)), (gate * _e(scale, dt)).unsqueeze(2), out=target)
            if x.dtype in (torch.float32, torch.float64):
                target.addcmul_(v, (_e(k, dt) / norms(x[:, start:start + mul * d], d)).unsqueeze(2), value=-1)
            else:  # half precision: |x| in float32 (its squares overflow), the unit vectors x / |x| rounded
                # once (k / |x| would be subnormal for large activations)
                v32 = v.float()
                unit = (v32 / norms(v32.flatten(1, 2), d).unsqueeze(2)).to(dt)
                target.addcmul_(unit, _e(k, dt).unsqueeze(2), value=-1)
            copy, out_start = copy + mul, out_start + mul * d
        sum_g = grad_y0.sum((2, 3, 4), dtype=acc)  # (batch, n0)
        sum_g_xhat = torch.sum(grad_y0 * x_hat, dim=(2, 3, 4), dtype=acc)
        # instance norm: dL/dx = rstd * w * (g - mean(g) - x_hat * mean(g * x_hat))
        a = rstd * w0
        torch.addcmul(_e(-a * sum_g / n_voxels, dt), grad_y0, _e(a, dt), out=grad_x[:, :n0])
        grad_x[:, :n0].addcmul_(x_hat, _e(-a * sum_g_xhat / n_voxels, dt))
        grad_weight = torch.cat([sum_g_xhat.sum(0), *grad_w_gated]).to(weight.dtype)
        return grad_x, grad_weight, sum_g.sum(0).to(bias.dtype), None
