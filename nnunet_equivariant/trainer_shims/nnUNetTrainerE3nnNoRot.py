from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nnNoRot  # noqa: F401
