from nnunet_equivariant.training.mirror import nnUNetTrainerMirrorKeepParams  # noqa: F401
