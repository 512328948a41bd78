"""networks."""
from nnunet_equivariant.networks.mirror_unet import MirrorUNet, mirror_unet_from_plans
from nnunet_equivariant.networks.patch_classifier import PatchClassifier, build_patch_classifier

__all__ = ["MirrorUNet", "PatchClassifier", "build_patch_classifier", "mirror_unet_from_plans"]
