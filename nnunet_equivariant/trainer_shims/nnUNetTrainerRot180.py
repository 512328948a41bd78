from nnunet_equivariant.training.rotation_baselines import nnUNetTrainerRot180  # noqa: F401
