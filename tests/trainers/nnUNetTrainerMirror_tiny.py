from tiny_trainers import nnUNetTrainerMirror_tiny  # noqa: F401
