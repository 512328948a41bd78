from nnunet_equivariant.training.offgrid_trainers import nnUNetTrainerE3nnConsistency  # noqa: F401
