from nnunet_equivariant.training.mirror import nnUNetTrainerMirror_f13  # noqa: F401
