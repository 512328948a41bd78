from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nnO3  # noqa: F401
