from nnunet_equivariant.training.mirror import nnUNetTrainerMirror_f1  # noqa: F401
