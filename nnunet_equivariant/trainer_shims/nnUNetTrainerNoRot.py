from nnunet_equivariant.training.rotation_baselines import nnUNetTrainerNoRot  # noqa: F401
