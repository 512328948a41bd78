from tiny_trainers_planning import nnUNetTrainer_pointwise_tiny  # noqa: F401
