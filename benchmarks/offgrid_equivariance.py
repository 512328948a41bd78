"""Off-grid equivariance error of the demo's E3nnUNet, layer by layer, on hard and smooth rods and discs.

One shape centred in a 24^3 grid of 1 mm voxels (noise-free), rendered along x and rendered at ``--angle``
degrees about z. For every encoder block and pooling and for the logits: the features of the rotated
rendering against the features of the unrotated one rotated by the same angle (cubic spline), on the
invariant channels (``0e`` values, norms of the other irrep copies), relative l2 error in a central ball
of radius 0.4 x the grid. ``input`` is the same error of the images themselves (the rendering's aliasing).
Exact grid rotations (90 degrees) give 0 up to the spline's error. Used in docs/rotation_eval.md
("What the CPU demo shows").

Usage: ``python benchmarks/offgrid_equivariance.py [--checkpoint fold_0/checkpoint_final.pth] [--angle 45]
[--edge-width 0.8]`` (the checkpoint of a demo's ``nnUNetTrainerE3nn``; random weights without it).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.ndimage import affine_transform

from nnunet_equivariant.layers._irreps import blocks
from nnunet_equivariant.networks.e3nn_unet import E3nnUNet
from nnunet_equivariant.synthetic import _cylinder_distance

SIZE = 24
SHAPES = {"rod": (8.0, 2.5), "disc": (2.0, 6.0)}  # half length along the axis, radius (the demo's geometry)


def _rotation(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])


def render(kind: str, theta: float, edge_width: float) -> np.ndarray:
    c = (SIZE - 1) / 2
    grid = np.stack(np.meshgrid(*[np.arange(SIZE) - c] * 3, indexing="ij"), -1)
    u = _rotation(theta)[:, 0]
    along = grid @ u
    across = np.linalg.norm(grid - along[..., None] * u, axis=-1)
    sd = _cylinder_distance(along, across, *SHAPES[kind])
    return 0.5 * (1 - np.tanh(sd / edge_width)) if edge_width > 0 else (sd <= 0).astype(np.float64)


def rotate(fields: np.ndarray, theta: float) -> np.ndarray:
    """``out(p) = in(R^T p)`` about the grid centre, per channel of ``(C, x, y, z)``."""
    r = _rotation(theta)
    c = (np.array(fields.shape[1:]) - 1) / 2
    return np.stack([affine_transform(f, r.T, offset=c - r.T @ c, order=3, mode="nearest") for f in fields])


def invariants(fields: np.ndarray, irreps) -> np.ndarray:
    parts = []
    for b in blocks(irreps):
        x = fields[b.start:b.stop]
        parts.append(x if b.d == 1 else np.linalg.norm(x.reshape(b.mul, b.d, *x.shape[1:]), axis=1))
    return np.concatenate(parts)


def relative_error(unrotated: np.ndarray, rotated: np.ndarray, theta: float) -> float:
    n = unrotated.shape[-1]
    grid = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2] * 3, indexing="ij"), -1)
    ball = np.linalg.norm(grid, axis=-1) <= 0.4 * n
    diff = rotate(unrotated, theta) - rotated
    return float(np.linalg.norm(diff[:, ball]) / np.linalg.norm(rotated[:, ball]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="nnU-Net checkpoint of the demo's nnUNetTrainerE3nn")
    parser.add_argument("--angle", type=float, default=45.0)
    parser.add_argument("--edge-width", type=float, nargs="+", default=[0.0, 0.8])
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    net = E3nnUNet(1, 3, 3, [32, 64, 128], [1, 2, 2], 2, 2).double().eval()  # the demo's plans
    if args.checkpoint:
        net.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=False)["network_weights"])
    features, irreps = {}, {}
    for s, stage in enumerate(net.encoder.stages):
        for k, op in enumerate(stage):
            name = f"enc{s}.{k}" + ("(pool)" if k == 0 and s > 0 else "")
            irreps[name] = op.irreps_out
            op.register_forward_hook(lambda m, i, o, name=name: features.__setitem__(name, o[0].numpy()))
    theta = np.deg2rad(args.angle)
    header = None
    for edge_width in args.edge_width:
        for kind in SHAPES:
            images = [render(kind, t, edge_width) for t in (0.0, theta)]
            mean, std = images[0].mean(), images[0].std()
            outputs = []
            for image in images:
                with torch.no_grad():
                    logits = net(torch.from_numpy((image - mean) / std)[None, None])[0].numpy()
                outputs.append({**{n: invariants(f, irreps[n]) for n, f in features.items()}, "logits": logits})
            row = {"input": relative_error(images[0][None], images[1][None], theta)}
            row.update({n: relative_error(outputs[0][n], outputs[1][n], theta) for n in outputs[0]})
            if header is None:
                header = list(row)
                print("| edge (mm) | shape | " + " | ".join(header) + " |")
                print("|---" * (len(header) + 2) + "|")
            print(f"| {edge_width} | {kind} | " + " | ".join(f"{row[h]:.3f}" for h in header) + " |")


if __name__ == "__main__":
    main()
