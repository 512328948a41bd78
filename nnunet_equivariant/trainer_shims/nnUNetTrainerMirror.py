from nnunet_equivariant.training.mirror import nnUNetTrainerMirror  # noqa: F401
