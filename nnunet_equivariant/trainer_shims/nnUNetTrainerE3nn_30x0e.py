from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn_30x0e  # noqa: F401
