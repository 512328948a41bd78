"""networks."""
from .e3nn_unet import E3nnUNet

__all__ = ["E3nnUNet"]
