from nnunet_equivariant.training.mirror import nnUNetTrainerMirror_f3  # noqa: F401
