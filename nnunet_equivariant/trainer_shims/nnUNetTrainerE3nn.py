from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn  # noqa: F401
