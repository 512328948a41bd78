from nnunet_equivariant.training.mirror import nnUNetTrainerMirror_f2  # noqa: F401
