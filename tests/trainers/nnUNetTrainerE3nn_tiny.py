from tiny_trainers import nnUNetTrainerE3nn_tiny  # noqa: F401
