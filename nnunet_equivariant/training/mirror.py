"""nnU-Net trainers with a mirror-symmetric U-Net (:class:`~nnunet_equivariant.networks.MirrorUNet`).

``nnUNetTrainerMirror`` is symmetric along all three axes (f123); ``nnUNetTrainerMirror_f1`` ...
``_f23`` along one or two (f1 = nnU-Net data axis 0); all keep the plans' widths, so they have fewer
parameters than the stock network. ``nnUNetTrainerMirrorKeepParams`` (f123) widens every stage by one
factor until the parameter count matches the stock ``PlainConvUNet`` of the same plans.

Stock mirroring augmentation stays on (harmless for the symmetric axes, useful for the others).
Test-time mirroring skips the axes the network is symmetric along: f123 predicts in 1 pass instead of 8,
fS mirrors only the other axes, with the same result as full mirroring up to float error.
"""
from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_equivariant.inference.laterality import LateralityGuardMixin
from nnunet_equivariant.inference.mirroring import NonRedundantMirroringMixin
from nnunet_equivariant.networks.mirror_unet import mirror_unet_from_plans

__all__ = [
    "nnUNetTrainerMirror",
    "nnUNetTrainerMirrorKeepParams",
    "nnUNetTrainerMirror_f1",
    "nnUNetTrainerMirror_f2",
    "nnUNetTrainerMirror_f3",
    "nnUNetTrainerMirror_f12",
    "nnUNetTrainerMirror_f13",
    "nnUNetTrainerMirror_f23",
]


class nnUNetTrainerMirror(LateralityGuardMixin, NonRedundantMirroringMixin, nnUNetTrainer):
    """MirrorUNet symmetric along ``symmetry`` (f123 here); ``keep_parameters`` widens it to the stock
    network's parameter count. Subclasses change only these two class attributes."""

    symmetry: str = "f123"
    keep_parameters: bool = False

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        return mirror_unet_from_plans(configuration_manager, num_input_channels, num_output_channels,
                                      cls.symmetry, enable_deep_supervision, cls.keep_parameters)


class nnUNetTrainerMirror_f1(nnUNetTrainerMirror):
    symmetry = "f1"


class nnUNetTrainerMirror_f2(nnUNetTrainerMirror):
    symmetry = "f2"


class nnUNetTrainerMirror_f3(nnUNetTrainerMirror):
    symmetry = "f3"


class nnUNetTrainerMirror_f12(nnUNetTrainerMirror):
    symmetry = "f12"


class nnUNetTrainerMirror_f13(nnUNetTrainerMirror):
    symmetry = "f13"


class nnUNetTrainerMirror_f23(nnUNetTrainerMirror):
    symmetry = "f23"


class nnUNetTrainerMirrorKeepParams(nnUNetTrainerMirror):
    keep_parameters = True
