from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nnPaperBasis  # noqa: F401
