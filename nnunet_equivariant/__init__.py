"""nnunet-equivariant: symmetry-aware networks (e3nn steerable, mirror-symmetric) for nnU-Net v2.

Importing the package is cheap; subpackages import torch and nnU-Net on first use.
"""
__version__ = "0.2.0"
