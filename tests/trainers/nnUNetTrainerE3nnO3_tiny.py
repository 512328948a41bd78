from tiny_trainers_e3nn import nnUNetTrainerE3nnO3_tiny  # noqa: F401
