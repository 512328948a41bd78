"""Off-grid consistency: an unlabelled loss on the network's prediction of a rotated patch against the
rotated prediction of the patch (a lever of issue 17).

A grid-exact network (``E3nnUNet``) commutes with the 24 rotations of the voxel grid by construction;
between them its sampled kernels, pooling and gates are only approximately equivariant, and trained in
one pose it loses Dice on thin structures at 30-45 degrees. This trainer mixin adds to nnU-Net's loss a
term that asks for equivariance exactly where the grid does not give it::

    loss = nnU-Net's loss(f(x), y) + weight * mean over valid voxels of sum_c (p(R x)_c - (R p(x))_c)^2

where ``p`` is nnU-Net's inference nonlinearity of the full-resolution logits (softmax over classes;
sigmoid for region-based training), ``R`` a rotation about one coordinate axis by an angle uniform in
``[-max_angle_deg, max_angle_deg]`` (45 deg: with the grid's symmetries these cover every rotation about
a coordinate axis, see :mod:`~nnunet_equivariant.training.offgrid_rotation`), drawn per rotated sample.
The term needs no labels; gradients flow through both predictions.

Convention
----------
- ``R`` is a rotation of physical space about the patch centre: with voxel spacing ``s`` (the plans'
  ``spacing``, nnU-Net's axis order), ``(R v)(p) = v(c + S^-1 R^T S (p - c))``, ``S = diag(s)``,
  ``c`` the centre of the voxel grid, sampled trilinearly (``torch.nn.functional.grid_sample``,
  ``align_corners=True``: -1 and 1 are the outermost voxel centres). At multiples of 90 degrees on an
  isotropic grid this is a permutation of voxels.
- Valid voxels: those whose source point lies inside the patch (within the hull of its voxel centres).
  ``R x`` is zero outside it (nnU-Net's normalised intensities: the mean), and the term ignores them.
- Cost: ``consistency_samples`` rotated copies (1 by default) are forwarded with the batch in one call of
  the network (``(batch + k, channels, *patch)``), so nnU-Net's ``train_step`` (autocast, ``GradScaler``,
  gradient clipping, DDP's single forward per backward) is used unchanged; with batch 2 a step costs about
  1.5x. The logged ``train_loss`` includes the weighted term.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from .offgrid_rotation import OffGridRotationSampler

__all__ = ["rotation_grid", "resample", "consistency_term", "OffgridConsistencyMixin"]


def rotation_grid(shape: tuple[int, int, int], spacing, rotations: np.ndarray,
                  dtype: torch.dtype = torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling grids of physical rotations about the centre of a voxel grid (module Convention).

    ``shape``: the patch ``(X, Y, Z)``; ``spacing``: 3 voxel sizes in the same order; ``rotations``:
    ``(k, 3, 3)``. Returns ``grid`` ``(k, X, Y, Z, 3)`` for ``grid_sample`` (its last axis in
    ``grid_sample``'s order: Z, Y, X normalised to [-1, 1]) and ``valid`` ``(k, X, Y, Z)`` bool.
    ``ValueError`` on a shape, spacing or rotation of the wrong size.
    """
    shape = tuple(int(n) for n in shape)
    spacing = np.asarray(spacing, dtype=np.float64)
    rotations = np.asarray(rotations, dtype=np.float64)
    if len(shape) != 3 or min(shape) < 2:
        raise ValueError(f"shape must be 3 sizes of at least 2 voxels, got {shape}")
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise ValueError(f"spacing must be 3 positive voxel sizes, got {spacing.tolist()}")
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
        raise ValueError(f"rotations must be (k, 3, 3), got {rotations.shape}")
    # source index q = c + S^-1 R^T S (p - c), as a row-vector product: (p - c) @ (S R S^-1); built on the
    # device in ``dtype`` (a 128^3 patch: 2M points a step)
    maps = torch.as_tensor(np.diag(spacing) @ rotations @ np.diag(1 / spacing), dtype=dtype, device=device)
    sizes = torch.as_tensor(shape, dtype=dtype, device=device)
    centre = (sizes - 1) / 2
    axes = [torch.arange(n, dtype=dtype, device=device) - c for n, c in zip(shape, centre)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    source = torch.einsum("xyzi,kij->kxyzj", points, maps) + centre
    tolerance = 1e-4 if dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-9  # of a voxel
    valid = ((source >= -tolerance) & (source <= sizes - 1 + tolerance)).all(-1)
    grid = (2 * source / (sizes - 1) - 1).flip(-1)  # grid_sample's (z, y, x) order
    return grid, valid


def resample(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``volume`` ``(k, channels, X, Y, Z)`` sampled trilinearly at ``grid`` (:func:`rotation_grid`), zero
    outside; same shape."""
    return F.grid_sample(volume, grid.to(volume.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


def consistency_term(of_rotated: torch.Tensor, of_original: torch.Tensor, grid: torch.Tensor,
                     valid: torch.Tensor) -> torch.Tensor:
    """Mean over the valid voxels of ``sum_c (of_rotated - R of_original)^2``: the network's output
    (probabilities) for the rotated patches ``(k, C, X, Y, Z)`` against its output for the original patches
    rotated by the same grids. A scalar; 0 for a network that commutes with the rotations."""
    if of_rotated.shape != of_original.shape:
        raise ValueError(f"outputs of the rotated and original patches differ in shape: "
                         f"{tuple(of_rotated.shape)} vs {tuple(of_original.shape)}")
    squared = (of_rotated - resample(of_original, grid)).square().sum(1)
    return squared[valid].mean()


class _WithConsistency(torch.nn.Module):
    """nnU-Net's loss, plus the consistency term when the trainer has put rotated copies into the batch."""

    def __init__(self, loss: torch.nn.Module, trainer: "OffgridConsistencyMixin"):
        super().__init__()
        self.loss = loss
        self._trainer = trainer

    def forward(self, output, target):
        pending = self._trainer._consistency_pending
        if pending is None:  # validation, or a step without rotated copies
            return self.loss(output, target)
        grid, valid = pending
        k = grid.shape[0]
        deep = isinstance(output, (list, tuple))
        levels = output if deep else [output]
        loss = self.loss([o[:-k] for o in levels] if deep else levels[0][:-k], target)
        # nnU-Net's inference nonlinearity, with gradients (its apply_inference_nonlin runs under no_grad)
        logits = levels[0].float()
        regions = self._trainer.label_manager.has_regions
        probabilities = torch.sigmoid(logits) if regions else torch.softmax(logits, 1)
        term = consistency_term(probabilities[-k:], probabilities[:k], grid, valid)
        self._trainer._consistency_last = term.detach()  # read at the epoch's end: no sync per step
        return loss + self._trainer.consistency_weight * term


class OffgridConsistencyMixin:
    """Trainer mixin: nnU-Net's loss plus ``consistency_weight`` (1.0) times the off-grid consistency term
    on ``consistency_samples`` (1) rotated copies of the batch's first samples, each rotated within
    ``consistency_max_angle_deg`` (45) about one coordinate axis (module docstring). Put it before the
    trainer class in the bases; it needs 3D patches."""

    consistency_weight: float = 1.0
    consistency_samples: int = 1
    consistency_max_angle_deg: float = 45.0
    _consistency_pending = None
    _consistency_last = float("nan")

    def _build_loss(self):
        if not self.consistency_weight >= 0:
            raise ValueError(f"consistency_weight must be >= 0, got {self.consistency_weight}")
        if not 0 < self.consistency_max_angle_deg <= 180:
            raise ValueError(f"consistency_max_angle_deg must be in (0, 180], got {self.consistency_max_angle_deg}")
        return _WithConsistency(super()._build_loss(), self)

    def _draw_rotations(self, k: int) -> np.ndarray:
        """``k`` rotations ``(k, 3, 3)``, each about one coordinate axis (uniform) by an angle uniform in +-max:
        the off-grid augmentation's draw (numpy's global generator: nnU-Net's seeding reaches it)."""
        sampler = OffGridRotationSampler(np.deg2rad(self.consistency_max_angle_deg))
        # one nonzero angle per draw, so the angles per axis are the rotation vector
        return Rotation.from_rotvec([[sampler(dim=d) for d in range(3)] for _ in range(k)]).as_matrix()

    def train_step(self, batch: dict) -> dict:
        data = batch["data"]
        if data.ndim != 5:
            raise ValueError(f"the off-grid consistency term needs 3D patches (batch, channels, x, y, z), "
                             f"got shape {tuple(data.shape)}")
        k = min(int(self.consistency_samples), data.shape[0])
        if self.consistency_weight == 0 or k < 1:
            return super().train_step(batch)
        data = data.to(self.device, non_blocking=True)
        grid, valid = rotation_grid(data.shape[2:], self.configuration_manager.spacing, self._draw_rotations(k),
                                    dtype=torch.float32, device=self.device)
        rotated = resample(data[:k], grid)
        self._consistency_pending = (grid, valid)
        try:
            result = super().train_step({**batch, "data": torch.cat([data, rotated])})
        finally:
            self._consistency_pending = None
        return result

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        if self.consistency_weight:
            self.print_to_log_file(f"off-grid consistency term (last step): {float(self._consistency_last):.4f}")
