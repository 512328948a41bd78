from tiny_trainers import nnUNetTrainer_tiny  # noqa: F401
