"""Steerable nnU-Net trainers: ``E3nnUNet`` built from the plans of any 3D configuration.

One parameterised base (``nnUNetTrainerE3nn``, the recommended recipe) whose network is decided by one
``E3nnSpec`` (``spec``), the paper's network (``nnUNetTrainerE3nnShells``), and thin public variants that
derive theirs with ``dataclasses.replace``: a new variant is one line. Everything else (data loading,
augmentation but rotation, loss, poly schedule, validation) is nnU-Net's own; the optimiser is Adam at the
paper's learning rate.
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import ClassVar

import torch
from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerVanillaAdam
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from ..inference.laterality import LateralityGuardMixin
from ..inference.mirroring import NonRedundantMirroringMixin
from ..networks.e3nn_spec import COMPACT_SPEC, E3nnSpec
from ..networks.e3nn_resenc_unet import E3nnResEncUNet
from ..networks.e3nn_unet import E3nnUNet, e3nn_unet_from_plans, e3nn_unet_kwargs
from ..planning.planner import SIZING_KEY
from .offgrid_rotation import OffGridRotationMixin

__all__ = [
    "nnUNetTrainerE3nn",
    "nnUNetTrainerE3nnNoRot",
    "nnUNetTrainerE3nnO3",
    "nnUNetTrainerE3nnRotDA",
    "nnUNetTrainerE3nn_30x0e",
    "nnUNetTrainerE3nn_8x8x0",
    "nnUNetTrainerE3nn_4x4x4",
    "nnUNetTrainerE3nn_k3",
    "nnUNetTrainerE3nnPaperBasis",
    "nnUNetTrainerE3nnShells",
    "nnUNetTrainerE3nnAntialias",
    "nnUNetTrainerE3nnLean",
    "nnUNetTrainerE3nnMeanPool",
    "nnUNetTrainerE3nnInvariantHead",
]


class nnUNetTrainerE3nn(LateralityGuardMixin, OffGridRotationMixin, NonRedundantMirroringMixin,
                        nnUNetTrainerVanillaAdam):
    """SO(3)-steerable ``E3nnUNet`` of ``spec`` (default ``COMPACT_SPEC``: 3^3 Gaussian-shell kernels, irreps
    ``12x0e+3x1e+1x2e`` per unit, a head that reads every irrep's invariants), trained with rotations within
    45 deg about one axis, p = 0.5 per sample: the poses its 24 exact grid rotations do not cover
    (``OffGridRotationMixin``; ``rotation_range_deg``: ``0`` off, ``None`` nnU-Net's stock).

    On real subcortical anatomy at 3 mm, trained for equal CPU seconds, this recipe learned all seven
    structures at stock nnU-Net's cost per iteration, was ahead of stock nnU-Net at 0 degrees and lost 0.015
    Dice at 30-45 degrees on average off its grid poses (the two smallest structures 0.02-0.04; stock
    nnU-Net's deviations are ten times larger; docs/offgrid_real_anatomy.md); the
    paper's network (5^3 kernels, 8:4:2, the scalar head: this class's until version 0.2) costs 3.7x per
    iteration and learned two to four. That network is ``nnUNetTrainerE3nnShells`` (load models trained
    under this name before with it: docs/steerable.md), and the paper's ablations derive from it.

    Variants set ``spec = replace(nnUNetTrainerE3nn.spec, ...)``; ``symmetry`` (read by the mirroring and
    laterality mixins) follows the spec. Test-time mirroring keeps only the axes the network is not
    already equivariant to: SO(3) one axis (2 passes), O(3) none (1 pass).

    Optimiser: nnU-Net's ``nnUNetTrainerVanillaAdam`` (Adam, its weight decay and poly decay) at the paper's
    5e-3. With nnU-Net's SGD (1e-2, momentum 0.99) the steerable network learns far more slowly: SGD moves
    the kernel only within the small equivariant subspace, by the projection of the gradient
    (docs/steerable.md, "Optimiser").
    """

    spec: ClassVar[E3nnSpec] = COMPACT_SPEC
    symmetry: ClassVar[str] = spec.symmetry

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not isinstance(cls.spec, E3nnSpec):
            raise TypeError(f"{cls.__name__}.spec must be an E3nnSpec, got {type(cls.spec).__name__}")
        loose = sorted(set(vars(cls)) & {f.name for f in fields(E3nnSpec)})
        if loose:  # the attributes of earlier versions would be silently ignored
            raise TypeError(f"{cls.__name__} sets {loose} as class attributes: the network is decided by its spec, "
                            f"write spec = replace({cls.__mro__[1].__name__}.spec, "
                            f"{', '.join(f'{name}=...' for name in loose)})")
        cls.symmetry = cls.spec.symmetry

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        e3nn_unet_kwargs(self.configuration_manager, type(self).__name__)  # fail now on 2D or unusable plans
        self.initial_lr = 5e-3  # the paper's Adam learning rate
        sizing = self.configuration_manager.configuration.get(SIZING_KEY)
        if sizing and not _same_spec(sizing.get("spec"), self.spec):
            self.print_to_log_file(
                f"WARNING: these plans were sized for {sizing.get('trainer')} ({sizing.get('spec')}), this trainer "
                f"builds {self.spec.describe()}: patch and batch size may not fit the memory target. Plan for it "
                f"with: nnunet-equivariant plan_and_preprocess -d ID -tr {type(self).__name__}")

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> E3nnUNet | E3nnResEncUNet:
        # nnUNetPlans -> E3nnUNet; nnU-Net's ResEnc M/L/XL plans -> E3nnResEncUNet
        return e3nn_unet_from_plans(configuration_manager, cls.spec, num_input_channels, num_output_channels,
                                    enable_deep_supervision, trainer_name=cls.__name__)


class nnUNetTrainerE3nnNoRot(nnUNetTrainerE3nn):
    """The default network trained without any rotation augmentation: only its exact grid symmetries stand
    between it and an unseen pose (the ablation of the off-grid rotations)."""

    rotation_range_deg = 0


class nnUNetTrainerE3nnShells(nnUNetTrainerE3nn):
    """The paper's network with band-limited Gaussian-shell kernels (``E3nnSpec()``: 5^3 kernels, irreps
    8:4:2 per unit, a head that reads the ``0e`` channels), no rotation augmentation:
    ``nnUNetTrainerE3nn``'s network until version 0.2. Models trained under ``nnUNetTrainerE3nn`` before
    load with this trainer (set the checkpoint's ``trainer_name``, docs/steerable.md); the paper's
    ablations below derive from it."""

    spec = E3nnSpec()
    rotation_range_deg = 0


class nnUNetTrainerE3nnO3(nnUNetTrainerE3nnShells):
    """O(3): equivariant to rotations and reflections (irreps 8x0e + 4x1o + 2x2e); 1 mirroring pass."""

    spec = replace(nnUNetTrainerE3nnShells.spec, symmetry="o3")


class nnUNetTrainerE3nnRotDA(nnUNetTrainerE3nnShells):
    """SO(3) with nnU-Net's stock rotation augmentation (ablation)."""

    rotation_range_deg = None


class nnUNetTrainerE3nn_30x0e(nnUNetTrainerE3nnShells):
    """Irreps-ratio ablation: scalars only (30x0e per unit)."""

    spec = replace(nnUNetTrainerE3nnShells.spec, irreps_ratio="30x0e")


class nnUNetTrainerE3nn_8x8x0(nnUNetTrainerE3nnShells):
    """Irreps-ratio ablation: 8x0e + 8x1e per unit."""

    spec = replace(nnUNetTrainerE3nnShells.spec, irreps_ratio="8x0e+8x1e")


class nnUNetTrainerE3nn_4x4x4(nnUNetTrainerE3nnShells):
    """Irreps-ratio ablation: 4x0e + 4x1e + 4x2e per unit."""

    spec = replace(nnUNetTrainerE3nnShells.spec, irreps_ratio="4x0e+4x1e+4x2e")


class nnUNetTrainerE3nn_k3(nnUNetTrainerE3nnShells):
    """3x3x3 kernels (the paper's small-kernel ablation)."""

    spec = replace(nnUNetTrainerE3nnShells.spec, kernel_size=3)


class nnUNetTrainerE3nnPaperBasis(nnUNetTrainerE3nnShells):
    """The paper's kernel basis (``radial_basis="smooth_finite"``: 5 radial functions, every l <= 2 at every
    radius), ``nnUNetTrainerE3nn``'s network until the shells became the default: exact on the grid, but
    trained in one pose it lost 0.10-0.14 Dice on thin structures at 30-60 degrees (docs/offgrid.md). For the
    paper's ablations, and for models trained under ``nnUNetTrainerE3nn`` before the change (nnU-Net takes
    the trainer from the checkpoint's ``trainer_name``: set it to this class's name, docs/offgrid.md)."""

    spec = replace(nnUNetTrainerE3nnShells.spec, radial_basis="smooth_finite")


class nnUNetTrainerE3nnAntialias(nnUNetTrainerE3nnShells):
    """Shells and an isotropic Gaussian blur (sigma 0.5 x stride voxels) before every pooling and after
    every upsampling: less aliasing off the grid (issue 13's windowed proxy at 45 degrees: 0.049 instead of
    0.095; docs/offgrid.md). Not the default: trained in one pose it did not learn the small nodule and
    lost up to 0.085 Dice on the slab at 30 degrees, where the shells alone lost 0.003."""

    spec = replace(nnUNetTrainerE3nnShells.spec, antialias=0.5, upsample_antialias=0.5)


class nnUNetTrainerE3nnLean(nnUNetTrainerE3nnShells):
    """Half the irreps at every stage of the paper's network (ratio ``4x0e+2x1e+1x2e`` per unit of dimension 15,
    widths x 0.5: 15, 30, 60, 135, 165 for nnU-Net's 32..320), so its convolutions cost about the multiply-adds
    of stock nnU-Net's 3^3 convolutions at full width (a 5^3 kernel from 15 to 18 channels against 3^3 from 32
    to 32: 1.2x) and a quarter of ``nnUNetTrainerE3nnShells``'s. Same equivariance and kernel basis; ~1/4 of its
    parameters (docs/benchmarks_e3nn.md)."""

    spec = replace(nnUNetTrainerE3nnShells.spec, irreps_ratio="4x0e+2x1e+1x2e", width_scale=0.5)


class nnUNetTrainerE3nnMeanPool(nnUNetTrainerE3nnShells):
    """The paper's network with mean pooling (``MeanPool3d``: each irrep's window mean, linear, so exact on
    the 48 grid symmetries and continuous off the grid) instead of the norm max pooling, whose choice of the
    largest vector jumps between voxels as a pose turns: on real anatomy (random weights, 45 degrees) the
    first pooling's error falls from 0.40 to 0.17 and the softmax's from 0.200 to 0.174
    (docs/offgrid_real_anatomy.md). Trained, it learned fewer structures in the same seconds."""

    spec = replace(nnUNetTrainerE3nnShells.spec, pooling="mean")


class nnUNetTrainerE3nnInvariantHead(nnUNetTrainerE3nnShells):
    """The paper's network whose segmentation heads read every irrep's invariants (``InvariantHead``: the
    ``0e`` channels and the norm of every vector and tensor copy) instead of the ``0e`` channels alone: at
    nnU-Net's first-stage width 32 the 8:4:2 ratio leaves 8 scalars for all classes' logits, stock nnU-Net
    has 32 channels there; the invariant head reads 14 (docs/offgrid_real_anatomy.md; part of the default)."""

    spec = replace(nnUNetTrainerE3nnShells.spec, head="invariants")


def _same_spec(stored, spec: E3nnSpec) -> bool:
    """Whether the spec dict ``stored`` in plans (``SIZING_KEY``) is ``spec``: read with the defaults of the
    fields added since it was written (``pooling``, ``head``), so plans sized before a new field are not flagged."""
    try:
        return stored is not None and E3nnSpec.from_dict(stored) == spec
    except (TypeError, ValueError):  # unknown fields or values: another version's spec
        return False
