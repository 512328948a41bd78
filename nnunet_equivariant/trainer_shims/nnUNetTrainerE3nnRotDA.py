from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nnRotDA  # noqa: F401
