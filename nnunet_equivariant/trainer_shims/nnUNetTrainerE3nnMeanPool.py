from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nnMeanPool  # noqa: F401
