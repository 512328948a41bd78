from nnunet_equivariant.training.offgrid_trainers import nnUNetTrainerE3nnCompact  # noqa: F401
