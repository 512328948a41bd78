"""Inference: non-redundant test-time mirroring (``mirroring``), symmetry-aware rotation TTA
(``rotation_tta``), ``nnunet-equivariant predict`` (``predict``), laterality mode (``laterality``) and export
(``export``).

Importing this package is cheap (no torch); the submodules import torch and nnU-Net.
"""

#: Values of ``--rotation_tta``: ``none`` (nnU-Net's mirroring only), ``grid`` (grid rotations too).
ROTATION_TTA_MODES = ("none", "grid")
#: Values of ``-device`` of ``nnunet-equivariant predict``, as ``nnUNetv2_predict`` accepts them.
DEVICES = ("cuda", "cpu", "mps")
