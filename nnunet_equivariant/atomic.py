"""Atomic output now lives in ``nnunet_equivariant.io`` with the other output helpers; this name stays for
existing imports."""
from nnunet_equivariant.io import atomic_folder, atomic_write_text, check_target

__all__ = ["check_target", "atomic_folder", "atomic_write_text"]
