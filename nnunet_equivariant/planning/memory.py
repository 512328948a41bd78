"""Training-memory estimate of the networks that train on the equivariant plans.

A forward + backward pass peaks at one of two moments (float32, measured on the CPU with
``benchmarks/planner_memory.py``; data and fit in ``docs/planner.md``):

- **start of backward**: every activation saved for backward is alive:
  ``per_value_start * batch * values``;
- **late in backward**, at the deepest, widest layers: the weight gradients exist (4 bytes per
  parameter), the encoder's activations still wait for their turn, and a steerable convolution
  re-assembles its dense kernel and its gradient for its own backward:
  ``per_parameter_late * parameters + per_value_late * batch * values + per_kernel_value * largest_kernel_values``
  (``per_parameter_late`` 4, the weight gradients, except for nnU-Net's ``ResidualEncoderUNet``: 6.55 measured).

``values`` is what every network of nnU-Net's protocol reports as ``compute_conv_feature_map_size(patch)``
per sample (the feature-map values it stores), ``largest_kernel_values`` the size of the largest kernel
one convolution applies (:func:`largest_kernel_values`). ``PlainConvUNet`` with 5^3 kernels holds 138 M
parameters at 6 stages, so its peak moves late for small patches; ``E3nnUNet`` has 1-2 M parameters but
a dense kernel of up to 33 M values in its widest layer. A training step adds the weights and SGD's
momentum (``8 * parameters``). On a GPU with nnU-Net's AMP the convolutions keep float16 activations, so
the same plans need less there; nnU-Net's own planner budgets about 7.7 bytes per feature-map value of
``PlainConvUNet`` for its 8 GB reference, against 10.35 measured here (``docs/planner.md``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from torch import nn

__all__ = ["MemoryModel", "MEMORY_MODELS", "largest_kernel_values", "estimate_forward_backward_bytes",
           "estimate_training_bytes"]


@dataclass(frozen=True)
class MemoryModel:
    """Bytes per stored feature-map value at the start of and late in backward, per value of the largest
    convolution kernel, and per parameter late in backward (4: the weight gradients)."""

    per_value_start: float
    per_value_late: float
    per_kernel_value: float
    per_parameter_late: float = 4.0

    def forward_backward_bytes(self, parameters: int, largest_kernel: int, batch_values: int) -> float:
        start = self.per_value_start * batch_values
        late = (self.per_parameter_late * parameters + self.per_value_late * batch_values
                + self.per_kernel_value * largest_kernel)
        return max(start, late)


# Fit to CPU float32 measurements of 4- to 6-stage networks at 24^3 to 88^3 (docs/planner.md).
MEMORY_MODELS = {
    "PlainConvUNet": MemoryModel(per_value_start=10.35, per_value_late=5.6, per_kernel_value=0.0),
    "E3nnUNet": MemoryModel(per_value_start=3.54, per_value_late=1.8, per_kernel_value=12.2),
}
# The ResEnc presets' networks, fit to their own measurements (4 stages, batch 1, 24^3 to 64^3; docs/planner.md).
# The plain networks' constants, borrowed before, under-estimated both: nnU-Net's residual encoder (3^3 kernels)
# by up to 33 % at small patches, where it peaks late at 6.55 bytes per parameter rather than the 4 of its
# weight gradients (measured, not explained here; its start-of-backward 10.04 bytes per value is the plain
# network's 10.35); the steerable one by 5-17 % everywhere (3.98 bytes per value at the start, 2.7 late,
# against 3.54 and 1.8).
MEMORY_MODELS["ResidualEncoderUNet"] = MemoryModel(per_value_start=10.04, per_value_late=2.43, per_kernel_value=0.0,
                                                   per_parameter_late=6.55)
MEMORY_MODELS["E3nnResEncUNet"] = MemoryModel(per_value_start=3.98, per_value_late=2.7, per_kernel_value=12.2)


def largest_kernel_values(network: nn.Module) -> int:
    """Values of the largest kernel one convolution applies: an ``nn.Conv3d`` weight, or the dense kernel
    a steerable convolution assembles from its basis (``irreps_out.dim x irreps_in.dim x kernel_shape``)."""
    largest = 0
    for module in network.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            largest = max(largest, module.weight.numel())
        elif hasattr(module, "kernel_shape") and hasattr(module, "irreps_in"):
            largest = max(largest, module.irreps_in.dim * module.irreps_out.dim * math.prod(module.kernel_shape))
    return largest


def _memory_model(network: nn.Module) -> MemoryModel:
    name = type(network).__name__
    if name not in MEMORY_MODELS:
        raise ValueError(f"no memory model for {name}; known: {sorted(MEMORY_MODELS)}")
    return MEMORY_MODELS[name]


def estimate_forward_backward_bytes(network: nn.Module, patch_size: Sequence[int], batch_size: int) -> float:
    """Memory a forward + backward pass adds on top of the network's weights and its input: gradients,
    saved activations, assembled kernels and temporaries (bytes, float32)."""
    parameters = sum(p.numel() for p in network.parameters())
    values = int(network.compute_conv_feature_map_size(list(patch_size)))
    return _memory_model(network).forward_backward_bytes(parameters, largest_kernel_values(network),
                                                         batch_size * values)


def estimate_training_bytes(network: nn.Module, patch_size: Sequence[int], batch_size: int) -> float:
    """Peak memory of one SGD training step: weights, momentum, and the forward + backward pass."""
    parameters = sum(p.numel() for p in network.parameters())
    return 8.0 * parameters + estimate_forward_backward_bytes(network, patch_size, batch_size)
