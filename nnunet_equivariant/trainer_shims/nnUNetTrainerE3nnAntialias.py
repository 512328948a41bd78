from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nnAntialias  # noqa: F401
