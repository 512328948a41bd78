from nnunet_equivariant.training.offgrid_trainers import nnUNetTrainerE3nnOffgridDA  # noqa: F401
