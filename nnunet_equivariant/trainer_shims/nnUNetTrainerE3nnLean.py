from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nnLean  # noqa: F401
