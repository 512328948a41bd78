from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nnInvariantHead  # noqa: F401
