from nnunet_equivariant.training.mirror import nnUNetTrainerMirror_f12  # noqa: F401
