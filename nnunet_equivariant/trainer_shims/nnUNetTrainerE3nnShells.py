from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nnShells  # noqa: F401
