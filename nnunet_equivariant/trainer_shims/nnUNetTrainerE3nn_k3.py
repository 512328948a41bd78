from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn_k3  # noqa: F401
