"""Networks: ``E3nnUNet`` and ``MirrorUNet`` (nnU-Net's network protocol) and their residual-encoder siblings
``E3nnResEncUNet`` and ``MirrorResEncUNet`` (nnU-Net's ResEnc M/L/XL plans); one ``*_from_plans`` builder per
family (any plans nnU-Net writes -> the matching initialised network, used by the trainers and the planner),
``E3nnSpec`` (the one recipe of a steerable network), and the paper's patch classifiers."""
from .e3nn_resenc_unet import E3nnResEncUNet
from .e3nn_spec import E3nnSpec
from .e3nn_unet import E3nnUNet, e3nn_unet_from_plans
from .mirror_unet import MirrorResEncUNet, MirrorUNet, mirror_unet_from_plans
from .patch_classifier import PatchClassifier, build_patch_classifier

__all__ = ["E3nnSpec", "E3nnUNet", "E3nnResEncUNet", "MirrorUNet", "MirrorResEncUNet", "PatchClassifier",
           "build_patch_classifier", "e3nn_unet_from_plans", "mirror_unet_from_plans"]
