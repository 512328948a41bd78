from tiny_trainers_mirror import nnUNetTrainerMirror_tiny  # noqa: F401
