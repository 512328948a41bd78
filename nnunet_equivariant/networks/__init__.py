"""networks."""
from nnunet_equivariant.networks.patch_classifier import PatchClassifier, build_patch_classifier
