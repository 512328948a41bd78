"""Multi-GPU training: keep DDP from broadcasting the constant buffers of our layers.

nnU-Net wraps the network in ``DistributedDataParallel`` with ``broadcast_buffers=True``, so before every
forward pass rank 0 broadcasts every buffer to the other ranks. The kernel bases of ``SteerableConv3d``
(several MB in a full-size ``E3nnUNet``) and the expansion matrices of the mirror-symmetric convolutions are
buffers only so that they follow ``.to(device)``; they are computed identically at construction on every
rank and never change, so broadcasting them is pure overhead. DDP skips the names listed in the wrapped
module's ``_ddp_params_and_buffers_to_ignore``; buffers only, so no gradient is ever left unsynchronised.
"""
from __future__ import annotations

from torch import nn

__all__ = ["CONSTANT_BUFFERS_ATTRIBUTE", "skip_constant_buffers_in_ddp"]

# A layer lists the names of its constant buffers in this attribute (a tuple of str).
CONSTANT_BUFFERS_ATTRIBUTE = "constant_buffers"
# nnU-Net compiles the network before wrapping it in DDP, and torch.compile's wrapper prefixes every name.
_COMPILED_PREFIX = "_orig_mod."


def skip_constant_buffers_in_ddp(network: nn.Module) -> list[str]:
    """Mark the constant buffers of every submodule of ``network`` as ignored by DDP; returns their names.

    Call at the end of the network's ``__init__`` (the names are fixed by then). Names are listed both as
    they are and with torch.compile's prefix, so the mark holds whether or not nnU-Net compiles first."""
    names = [f"{prefix}.{buffer}" if prefix else buffer
             for prefix, module in network.named_modules()
             for buffer in getattr(module, CONSTANT_BUFFERS_ATTRIBUTE, ())]
    network._ddp_params_and_buffers_to_ignore = names + [_COMPILED_PREFIX + n for n in names]
    return names
