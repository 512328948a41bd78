from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn_8x8x0  # noqa: F401
