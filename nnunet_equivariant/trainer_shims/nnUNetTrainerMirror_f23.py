from nnunet_equivariant.training.mirror import nnUNetTrainerMirror_f23  # noqa: F401
