from nnunet_equivariant.training.rotation_baselines import nnUNetTrainerRot20  # noqa: F401
