from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn_4x4x4  # noqa: F401
