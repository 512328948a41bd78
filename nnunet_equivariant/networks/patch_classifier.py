"""The per-vertex patch classifiers of Dordiuk et al. (Sec. II.D, Fig. 2, Tables I-II).

A vertex is classified from an ``N^3`` patch of the signed distance function around it::

    (batch, 1, 16, 16, 16) -- [Conv k/s, no padding -- ReLU] x L -- Conv1 160 -- ReLU -- Conv1 160 -- ReLU
                           -- Conv1 c -- Sigmoid --> (batch, c)

An architecture name lists the convolutions as ``K<kernel>S<stride>``: ``"K8S1-K8S1-K2S1"`` is 8^3 then
8^3 then 2^3 kernels with stride 1 (16 -> 9 -> 2 -> 1). The convolutions are
:class:`~nnunet_equivariant.layers.MirrorSymmetricConv3d` with the chosen symmetry (``f1`` ... ``f123``,
axis 1, 2, 3 = patch dims 2, 3, 4); the 1x1x1 MLP has nothing to mirror. Every window of these
architectures is centred, so a symmetric model's scores are invariant to flipping the patch along its
symmetric axes.

Tasks: ``"keep_architecture"`` keeps the baseline's kernel counts (fewer parameters);
``"keep_parameters"`` uses the paper's Table I kernel counts, which bring the parameter count back to the
baseline's (Table II). For other architectures, :func:`keep_parameter_widths` computes such widths.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nnunet_equivariant.layers.mirror_conv import MirrorSymmetricConv3d, symmetry_axes
from nnunet_equivariant.networks.parameter_matching import count_parameters, match_widths

__all__ = [
    "PAPER_KERNEL_COUNTS",
    "TASKS",
    "PatchClassifier",
    "build_patch_classifier",
    "keep_parameter_widths",
    "parse_architecture",
]

TASKS = ("keep_architecture", "keep_parameters")
MLP_WIDTH = 160

#: Table I: kernels per convolution for the baseline and for each symmetry class, keep-parameters task.
#: ``f*`` is any one axis, ``f**`` any two, ``f***`` all three.
PAPER_KERNEL_COUNTS: dict[str, dict[str, tuple[int, ...]]] = {
    "K16S16": {"base": (160,), "f*": (308,), "f**": (575,), "f***": (1012,)},
    "K4S4-K4S4": {"base": (64, 160), "f*": (80, 251), "f**": (132, 300), "f***": (225, 348)},
    "K8S1-K8S1-K2S1": {"base": (25, 50, 100), "f*": (35, 71, 145), "f**": (50, 100, 175),
                       "f***": (73, 140, 167)},
}


def parse_architecture(arch: str) -> tuple[tuple[int, int], ...]:
    """``"K4S4-K4S4"`` -> ``((4, 4), (4, 4))``: (kernel, stride) of each convolution."""
    parts = arch.split("-")
    matches = [re.fullmatch(r"K(\d+)S(\d+)", p) for p in parts]
    if not arch or not all(matches) or any(int(m[1]) < 1 or int(m[2]) < 1 for m in matches):
        raise ValueError(f"architecture must look like 'K8S1-K8S1-K2S1' (K<kernel>S<stride> joined by '-'), "
                         f"got {arch!r}")
    return tuple((int(m[1]), int(m[2])) for m in matches)


class PatchClassifier(nn.Module):
    """Convolutions (no padding, ReLU) reducing an ``N^3`` patch to ``1^3``, then a 1x1x1 MLP.

    ``layers``: (kernel, stride) per convolution; ``widths``: kernels (output channels) per convolution.
    ``forward``: ``(batch, in_channels, N, N, N)`` -> class scores ``(batch, num_classes)`` in (0, 1);
    ``logits`` gives the scores before the sigmoid (for ``BCEWithLogitsLoss``).
    Raises ``ValueError`` if the convolutions do not reduce ``patch_size`` exactly to 1 with every window
    inside the patch, or if ``forward`` gets another shape.
    """

    def __init__(self, layers: Sequence[tuple[int, int]], widths: Sequence[int], symmetry: str | None = None,
                 num_classes: int = 2, in_channels: int = 1, patch_size: int = 16, mlp_width: int = MLP_WIDTH):
        super().__init__()
        if len(layers) != len(widths) or min(widths, default=0) < 1:
            raise ValueError(f"need one positive width per convolution: layers {list(layers)}, widths {list(widths)}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        size = patch_size
        for kernel, stride in layers:
            if size < kernel or (size - kernel) % stride:
                raise ValueError(f"convolutions {list(layers)} do not tile a {patch_size}^3 patch exactly "
                                 f"(kernel {kernel}, stride {stride} on length {size})")
            size = (size - kernel) // stride + 1
        if size != 1:
            raise ValueError(f"convolutions {list(layers)} reduce a {patch_size}^3 patch to {size}^3, not 1^3")
        self.symmetry = symmetry
        self.input_shape = (in_channels, patch_size, patch_size, patch_size)
        convs: list[nn.Module] = []
        channels = in_channels
        for (kernel, stride), width in zip(layers, widths):
            convs += [MirrorSymmetricConv3d(channels, width, kernel, stride, symmetry=symmetry), nn.ReLU(inplace=True)]
            channels = width
        self.convs = nn.Sequential(*convs)
        self.mlp = nn.Sequential(
            nn.Conv3d(channels, mlp_width, 1), nn.ReLU(inplace=True),
            nn.Conv3d(mlp_width, mlp_width, 1), nn.ReLU(inplace=True),
            nn.Conv3d(mlp_width, num_classes, 1),
        )

    def logits(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected patches of shape (batch, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        return self.mlp(self.convs(x)).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(x))


def _symmetry_class(symmetry: str | None) -> str:
    return "base" if symmetry is None else "f" + "*" * len(symmetry_axes(symmetry))


def build_patch_classifier(arch: str, symmetry: str | None = None, task: str = "keep_architecture",
                           num_classes: int = 2) -> PatchClassifier:
    """One of the paper's classifiers for ``(batch, 1, 16, 16, 16)`` SDF patches.

    ``arch``: ``"K16S16"``, ``"K4S4-K4S4"`` or ``"K8S1-K8S1-K2S1"``; ``symmetry``: ``None`` or ``"f1"`` ...
    ``"f123"``; ``task``: ``"keep_architecture"`` (baseline kernel counts) or ``"keep_parameters"`` (Table
    I kernel counts). The output layer has ``num_classes`` kernels (Table II counts are for 2).
    """
    if arch not in PAPER_KERNEL_COUNTS:
        raise ValueError(f"arch must be one of {tuple(PAPER_KERNEL_COUNTS)}, got {arch!r} "
                         f"(build other architectures with PatchClassifier and keep_parameter_widths)")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    counts = PAPER_KERNEL_COUNTS[arch]
    widths = counts["base"] if task == "keep_architecture" else counts[_symmetry_class(symmetry)]
    return PatchClassifier(parse_architecture(arch), widths, symmetry, num_classes)


def keep_parameter_widths(arch: str, base_widths: Sequence[int], symmetry: str | None, num_classes: int = 2,
                          patch_size: int = 16) -> tuple[int, ...]:
    """Kernel counts for a symmetric ``arch`` whose parameter count matches the baseline with
    ``base_widths``: all convolutions scaled by one factor, the last one absorbing the rounding.

    For a single convolution this is the exact optimum (it reproduces Table I for K16S16); the paper
    chose its multi-layer counts by hand, so there the widths differ from Table I while the parameter
    count lands as close to the baseline as the paper's (see docs/mirror.md).
    """
    layers = parse_architecture(arch)

    def count(widths, sym=symmetry):
        return count_parameters(lambda: PatchClassifier(layers, widths, sym, num_classes, patch_size=patch_size))

    return match_widths(base_widths, count, count(tuple(base_widths), None))
