from tiny_trainers_e3nn import nnUNetTrainerE3nn_tiny  # noqa: F401
