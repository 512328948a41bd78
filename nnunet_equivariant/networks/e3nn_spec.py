"""``E3nnSpec``: the one recipe of a steerable network, shared by the trainer, the network, the planner,
export and compare.

Everything that decides a steerable network besides the topology nnU-Net's plans give (stages, strides,
widths, convolutions per stage, spacing, patch) is one frozen, validated value. Trainers hold one
(``nnUNetTrainerE3nn.spec``) and variants derive theirs with ``dataclasses.replace``; the network takes it
(``E3nnUNet(..., spec=...)``), the planner sizes plans for a trainer's spec, and ``to_dict`` puts it into
plans, export metadata and reports. Its defaults are the paper's network (5^3 kernels, the 8:4:2 irreps ratio,
a head that reads the scalars), the only declaration of it; ``COMPACT_SPEC`` is the default trainer's recipe.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from e3nn import o3

from ..layers import InvariantHead, SteerableBlock, SteerableConv3d, parse_irreps
from ..layers.gate import SCALAR_ACTIVATIONS
from ..layers.pool import POOLINGS, make_pool
from ..layers.steerable_conv import DEFAULT_RADIAL_BASIS, RADIAL_BASES
from ..symmetry import GROUPS, get_symmetry

__all__ = ["COMPACT_SPEC", "E3nnSpec", "HEADS", "STEERABLE_SYMMETRIES", "irreps_for_width", "scalars_first"]

#: The groups a steerable network can have (``symmetry.py``'s steerable family).
STEERABLE_SYMMETRIES = tuple(name for name, s in GROUPS.items() if s.family == "steerable")

#: What a segmentation head reads: the even scalars (a pointwise ``SteerableConv3d``, the paper's) or the
#: invariants of every irrep (``InvariantHead``: the scalars and the norms of the other irreps).
HEADS = ("scalars", "invariants")


def scalars_first(irreps: o3.Irreps) -> o3.Irreps:
    """``0e``, then ``0o``, then the other irreps in their given order: the layout the gate outputs."""
    def rank(mul_ir) -> int:
        return 0 if mul_ir.ir == o3.Irrep("0e") else 1 if mul_ir.ir.l == 0 else 2

    return o3.Irreps(sorted(irreps, key=rank))


def irreps_for_width(width: int, ratio: str) -> o3.Irreps:
    """``ratio`` scaled by the whole number of units whose dimension is closest to ``width`` (at least 1).

    Scalars come first (``0e`` then ``0o``), then the other irreps in the ratio's order: the layout the
    gate produces. ``irreps_for_width(32, "8x0e+4x1e+2x2e") == 8x0e+4x1e+2x2e`` (dim 30); width 256 gives
    9 units (dim 270).
    """
    ratio = parse_irreps(ratio, "irreps_ratio")
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"feature width must be a positive integer, got {width!r}")
    units = max(1, int(np.floor(width / ratio.dim + 0.5)))
    return scalars_first(o3.Irreps([(mul * units, ir) for mul, ir in ratio]))


@dataclass(frozen=True)
class E3nnSpec:
    """The recipe of a steerable network (validated once, here).

    - ``symmetry``: ``"so3"`` (rotations; every irrep even) or ``"o3"`` (rotations and reflections; true
      parities).
    - ``irreps_ratio``: hidden irreps per unit, scaled to each stage's width (``None``: the group's 8:4:2,
      ``8x0e+4x1e+2x2e`` / ``8x0e+4x1o+2x2e``). Every irrep's ``l <= lmax``; with ``"so3"`` all even.
    - ``kernel_size``: odd number of taps along a stage's finest axis; kernels are balls in mm, so coarser
      axes get fewer taps.
    - ``radial_basis`` / ``num_radial_basis`` / ``lmax``: the kernel basis (``SteerableConv3d``):
      ``"gaussian_shells"`` (band-limited, the default), ``"smooth_finite"`` (the paper's) or
      ``"gaussian_shells_half"`` (the shells at every half voxel from 1: an off-grid benchmark option).
    - ``scalar_activation``: the gate's activation of even scalars (``"leaky_relu"``: nnU-Net's).
    - ``antialias`` / ``upsample_antialias``: isotropic Gaussian blur of ``value * stride`` voxels before
      every pooling / after every upsampling (0: none).
    - ``pooling``: ``"norm_max"`` (``NormMaxPool3d``, the default) or ``"mean"`` (``MeanPool3d``: the window
      mean of every component, linear and continuous; an off-grid option, docs/offgrid_real_anatomy.md).
    - ``head``: what every segmentation head reads: ``"scalars"`` (the default, the paper's: a pointwise
      linear map of the ``0e`` channels) or ``"invariants"`` (``InvariantHead``: the ``0e`` channels and the
      norm of every other irrep copy; 14 instead of 8 inputs in the first stage at nnU-Net's width 32).
    - ``width_scale``: multiplies the plans' integer feature widths (rounded, at least 1) before they
      become irreps (``0.5`` with ``4x0e+2x1e+1x2e``: the lean network).

    >>> lean = dataclasses.replace(E3nnSpec(), irreps_ratio="4x0e+2x1e+1x2e", width_scale=0.5)
    >>> lean.stage_irreps(64)
    8x0e+4x1e+2x2e
    """

    symmetry: str = "so3"
    irreps_ratio: str | None = None
    kernel_size: int = 5
    radial_basis: str = DEFAULT_RADIAL_BASIS  # "gaussian_shells"
    num_radial_basis: int = 5
    lmax: int = 2
    scalar_activation: str = "leaky_relu"
    antialias: float = 0.0
    upsample_antialias: float = 0.0
    pooling: str = "norm_max"
    head: str = "scalars"
    width_scale: float = 1.0

    def __post_init__(self):
        if self.symmetry not in STEERABLE_SYMMETRIES:
            raise ValueError(f"symmetry must be one of {list(STEERABLE_SYMMETRIES)}, got {self.symmetry!r}")
        if not _is_int(self.kernel_size) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer (a centred kernel), "
                             f"got {self.kernel_size!r}")
        if self.radial_basis not in RADIAL_BASES:
            raise ValueError(f"radial_basis must be one of {list(RADIAL_BASES)}, got {self.radial_basis!r}")
        if not _is_int(self.num_radial_basis) or self.num_radial_basis < 1:
            raise ValueError(f"num_radial_basis must be a positive integer, got {self.num_radial_basis!r}")
        if not _is_int(self.lmax) or self.lmax < 0:
            raise ValueError(f"lmax must be a non-negative integer, got {self.lmax!r}")
        if self.scalar_activation not in SCALAR_ACTIVATIONS:
            raise ValueError(f"scalar_activation must be one of {list(SCALAR_ACTIVATIONS)}, "
                             f"got {self.scalar_activation!r}")
        for name in ("antialias", "upsample_antialias"):
            value = getattr(self, name)
            if not _is_number(value) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0 (Gaussian sigma per stride), got {value!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {list(HEADS)}, got {self.head!r}")
        if not _is_number(self.width_scale) or not self.width_scale > 0:
            raise ValueError(f"width_scale must be a positive number, got {self.width_scale!r}")
        ratio = parse_irreps(self.ratio, "irreps_ratio")
        if any(ir.l > self.lmax for _, ir in ratio):
            raise ValueError(f"irreps_ratio {ratio} holds irreps above lmax={self.lmax}")
        if not self.parity and any(ir.p != 1 for _, ir in ratio):
            raise ValueError(f"irreps_ratio {ratio} holds odd irreps: symmetry 'so3' takes even irreps only "
                             f"(use symmetry 'o3' for parities)")

    # --- derived ------------------------------------------------------------------------------------------

    @property
    def parity(self) -> bool:
        """True for O(3): irreps keep their parities and kernels respect reflections."""
        return get_symmetry(self.symmetry).parity

    @property
    def ratio(self) -> str:
        """The hidden irreps per unit: ``irreps_ratio`` or the group's default."""
        return self.irreps_ratio if self.irreps_ratio is not None else get_symmetry(self.symmetry).irreps_ratio

    def stage_irreps(self, width: int | str) -> o3.Irreps:
        """A stage's hidden irreps: an irreps string as given (scalars first), or an integer width of the
        plans scaled by ``width_scale`` and mapped to ``ratio`` (:func:`irreps_for_width`)."""
        if isinstance(width, str):
            if self.width_scale != 1:
                raise ValueError(f"width_scale {self.width_scale} needs integer feature widths, got {width!r}")
            return scalars_first(parse_irreps(width, "features_per_stage"))
        if _is_int(width) and width >= 1 and self.width_scale != 1:
            width = max(1, int(round(width * self.width_scale)))
        return irreps_for_width(width, self.ratio)

    def conv(self, irreps_in, irreps_out, spacing: Sequence[float], kernel_size: int | None = None,
             bias: bool = False) -> SteerableConv3d:
        """A ``SteerableConv3d`` of this recipe (``kernel_size=None``: the spec's; 1: pointwise linear)."""
        return SteerableConv3d(irreps_in, irreps_out, self.kernel_size if kernel_size is None else kernel_size,
                               spacing, self.num_radial_basis, self.lmax, parity=self.parity, bias=bias,
                               radial_basis=self.radial_basis)

    def seg_head(self, irreps_in, num_classes: int, spacing: Sequence[float]) -> SteerableConv3d | InvariantHead:
        """A segmentation head of this recipe: ``irreps_in`` -> ``num_classes x 0e`` logits, pointwise, with bias."""
        if self.head == "invariants":
            return InvariantHead(irreps_in, num_classes)
        return self.conv(irreps_in, f"{num_classes}x0e", spacing, kernel_size=1, bias=True)

    def pool(self, irreps, stride):
        """The pooling of this recipe (``NormMaxPool3d`` or ``MeanPool3d``) of ``irreps``, window = ``stride``."""
        return make_pool(self.pooling, irreps, stride)

    def block(self, irreps_in, irreps_hidden, spacing: Sequence[float]) -> SteerableBlock:
        """A ``SteerableBlock`` (``-- SteerableConv3d -- EquivariantInstanceNorm -- EquivariantGate --``)."""
        return SteerableBlock(irreps_in, irreps_hidden, self.kernel_size, spacing, self.parity,
                              self.num_radial_basis, self.lmax, self.scalar_activation, self.radial_basis)

    # --- serialisation -------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (for plans, export metadata and reports)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "E3nnSpec":
        """The spec of ``to_dict``'s output; ``ValueError`` naming unknown fields."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown E3nnSpec fields {unknown}; known: {[f.name for f in dataclasses.fields(cls)]}")
        return cls(**values)

    @classmethod
    def coerce(cls, spec: "E3nnSpec | Mapping[str, Any] | None") -> "E3nnSpec":
        """``spec`` itself, the spec of a dict (as stored in plans), or the default for ``None``."""
        if spec is None:
            return cls()
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        raise ValueError(f"spec must be an E3nnSpec, a dict of its fields or None, got {type(spec).__name__}")

    def with_symmetry(self, symmetry: str) -> "E3nnSpec":
        """This recipe for another group, irreps in the group's natural parities: for ``"o3"`` every odd
        ``l`` becomes ``o`` (a vector, ``1o``, not a pseudovector), for ``"so3"`` every irrep ``e``; a ratio
        left to the group (``None``) stays so. ``with_symmetry("o3")`` of ``12x0e+3x1e+1x2e`` is
        ``12x0e+3x1o+1x2e``. ``ValueError`` naming an unknown group."""
        if symmetry not in STEERABLE_SYMMETRIES:
            raise ValueError(f"symmetry must be one of {list(STEERABLE_SYMMETRIES)}, got {symmetry!r}")
        if self.irreps_ratio is None:
            return dataclasses.replace(self, symmetry=symmetry)
        parity = get_symmetry(symmetry).parity
        ratio = o3.Irreps([(mul, (ir.l, (-1) ** ir.l if parity else 1))
                           for mul, ir in parse_irreps(self.irreps_ratio, "irreps_ratio")])
        return dataclasses.replace(self, symmetry=symmetry, irreps_ratio=str(ratio))

    def describe(self) -> str:
        """One line for logs and reports: the fields that differ from ``E3nnSpec()`` (the paper's network)."""
        default = E3nnSpec()
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                   if getattr(self, f.name) != getattr(default, f.name)]
        return f"E3nnSpec({', '.join(changed)})" if changed else "E3nnSpec() (the paper's network)"


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


#: ``nnUNetTrainerE3nn``'s network (and the planner's default): 3^3 kernels, more scalars (``12x0e+3x1e+1x2e``
#: per unit: 26 dimensions at nnU-Net's width 32) and the invariant head. On real anatomy at 3 mm, trained for
#: equal CPU seconds, it learned every structure where the paper's 5^3 network learned two to four, at stock
#: nnU-Net's cost per iteration, with the smallest off-grid deviation measured (docs/offgrid_real_anatomy.md).
COMPACT_SPEC = E3nnSpec(kernel_size=3, irreps_ratio="12x0e+3x1e+1x2e", head="invariants")
