"""Networks: ``E3nnUNet`` and ``MirrorUNet`` (nnU-Net's network protocol) and the paper's patch classifiers."""
from .e3nn_unet import E3nnUNet
from .mirror_unet import MirrorUNet, mirror_unet_from_plans
from .patch_classifier import PatchClassifier, build_patch_classifier

__all__ = ["E3nnUNet", "MirrorUNet", "PatchClassifier", "build_patch_classifier", "mirror_unet_from_plans"]
