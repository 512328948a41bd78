"""Off-grid equivariance error of E3nnUNet, layer by layer: issue 13's proxy, and rods and discs.

``--proxy`` (issue 13's recipe; docs/offgrid.md): the network the trainer builds from nnU-Net's default
plans for 32^3 patches at 1 mm (4 stages, 32..256 features), random weights, float64, eval; input
Gaussian-smoothed noise (sigma 2 voxels), standardised, optionally faded out by a smooth spherical window
(``--window``: everything the rotation moves stays inside the patch, so the instance norms see the same
content in both poses); ``net(rotate(x))`` against ``rotate(net(x))`` for a cubic-spline rotation by
``--angle`` degrees about the first volume axis, relative l2 error in the central ball of radius 0.4 x
the patch. Per layer the error is on the whole field (``D(R)`` applied to the irreps channels, so wrongly
oriented vectors count); the last column is the softmax, the issue's number. One row per network variant
(``--variants``), and stock nnU-Net's ``PlainConvUNet`` from the same plans for reference.

Without ``--proxy``:

One shape centred in a 24^3 grid of 1 mm voxels (noise-free), rendered along x and rendered at ``--angle``
degrees about z. For every encoder block and pooling and for the logits: the features of the rotated
rendering against the features of the unrotated one rotated by the same angle (cubic spline), on the
invariant channels (``0e`` values, norms of the other irrep copies), relative l2 error in a central ball
of radius 0.4 x the grid. ``input`` is the same error of the images themselves (the rendering's aliasing).
Exact grid rotations (90 degrees) give 0 up to the spline's error. Used in docs/rotation_eval.md
("What the CPU demo shows").

Usage: ``python benchmarks/offgrid_equivariance.py [--checkpoint fold_0/checkpoint_final.pth] [--angle 45]
[--edge-width 0.8]`` (the checkpoint of a demo's ``nnUNetTrainerE3nn``; random weights without it), or
``python benchmarks/offgrid_equivariance.py --proxy [--window] [--variants paper shells ...]``, or
``python benchmarks/offgrid_equivariance.py --context [--patch-sizes 32 48 64] [--variants ...]`` (the plain
proxy with real content in the rotated patch's corners, at several patch sizes: ``run_context``), or
``python benchmarks/offgrid_equivariance.py --anatomy [--angles 45 90] [--variants ...]`` (the same per-layer
analysis on a real subcortical label map rendered at 3 mm, on the whole field and in the band around the
thin structures' boundaries: ``run_anatomy``; needs the optional ``anatomy`` extra; ``--weights
default=MODEL_FOLDER`` adds a trained network, ``--band-structures amygdala accumbens`` moves the band).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import affine_transform

from nnunet_equivariant.layers._irreps import blocks
from nnunet_equivariant.layers.steerable_conv import DEFAULT_RADIAL_BASIS, RADIAL_BASES
from nnunet_equivariant.networks import E3nnSpec, E3nnUNet
from nnunet_equivariant.networks.e3nn_spec import COMPACT_SPEC
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


# E3nnSpec fields of the variants the proxy compares
VARIANTS = {
    "paper": dict(radial_basis="smooth_finite"),
    "shells": dict(radial_basis="gaussian_shells"),
    "shells+silu": dict(radial_basis="gaussian_shells", scalar_activation="silu"),
    "shells+aa_pool": dict(radial_basis="gaussian_shells", antialias=0.5),
    "shells+aa_pool+up": dict(radial_basis="gaussian_shells", antialias=0.5, upsample_antialias=0.5),
    "shells+aa_pool+up+silu": dict(radial_basis="gaussian_shells", antialias=0.5, upsample_antialias=0.5,
                                   scalar_activation="silu"),
    "shells+aa_pool0.7": dict(radial_basis="gaussian_shells", antialias=0.7),
    "paper+aa_pool": dict(radial_basis="smooth_finite", antialias=0.5),
    "shells+mean_pool": dict(radial_basis="gaussian_shells", pooling="mean"),
    "shells+aa_pool+mean_pool": dict(radial_basis="gaussian_shells", antialias=0.5, pooling="mean"),
    "shells+aa_pool+up+mean_pool": dict(radial_basis="gaussian_shells", antialias=0.5, upsample_antialias=0.5,
                                        pooling="mean"),
    "shells_half": dict(radial_basis="gaussian_shells_half"),
    "shells_half+silu": dict(radial_basis="gaussian_shells_half", scalar_activation="silu"),
    # the default trainer's recipe (COMPACT_SPEC: 3^3 shells, 12x0e+3x1e+1x2e, invariant head) with the blur
    "compact+aa_pool": dict(COMPACT_SPEC.to_dict(), antialias=0.5),
    "compact+aa_pool+up": dict(COMPACT_SPEC.to_dict(), antialias=0.5, upsample_antialias=0.5),
    "compact+aa_pool+up+silu": dict(COMPACT_SPEC.to_dict(), antialias=0.5, upsample_antialias=0.5,
                                    scalar_activation="silu"),
}
#: the encoder's non-block operations by class name, as the layer tables name them
_OP_KINDS = {"GaussianBlur3d": "blur", "NormMaxPool3d": "pool", "MeanPool3d": "pool"}
PROXY_PLANS = dict(n_stages=4, features_per_stage=[32, 64, 128, 256], strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2],
                   [2, 2, 2]], n_conv_per_stage=[2] * 4, n_conv_per_stage_decoder=[2] * 3)


def _rotation_x(theta: float) -> np.ndarray:
    return np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])


def rotate_x(fields: np.ndarray, theta: float) -> np.ndarray:
    """``out(p) = in(R^T p)`` about the grid centre and the first axis, cubic spline, per channel."""
    r = _rotation_x(theta)
    c = (np.array(fields.shape[1:]) - 1) / 2
    return np.stack([affine_transform(f, r.T, offset=c - r.T @ c, order=3, mode="nearest") for f in fields])


def field_error(unrotated: np.ndarray, rotated: np.ndarray, theta: float, irreps=None) -> float:
    """Relative l2 error of ``D(R) rotate(unrotated)`` against ``rotated`` in the central ball (0.4 n)."""
    from nnunet_equivariant.testing import irreps_D

    n = unrotated.shape[-1]
    grid = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2] * 3, indexing="ij"), -1)
    ball = np.linalg.norm(grid, axis=-1) <= 0.4 * n
    expected = rotate_x(unrotated, theta)
    if irreps is not None:
        D = irreps_D(irreps, torch.from_numpy(_rotation_x(theta))).numpy()
        expected = np.einsum("ij,j...->i...", D, expected)
    return float(np.linalg.norm((expected - rotated)[:, ball]) / np.linalg.norm(rotated[:, ball]))


def proxy_input(n: int, window: bool, seed: int = 0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(np.random.default_rng(seed).standard_normal((n, n, n)), 2.0)
    x = (x - x.mean()) / x.std()
    if window:
        r = np.linalg.norm(np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2] * 3, indexing="ij"), -1), axis=-1)
        x = x * 0.5 * (1 - np.tanh((r - 0.35 * n) / 1.5))
    return x[None]


def _stock_network(num_classes: int = 3) -> torch.nn.Module:
    """nnU-Net's PlainConvUNet for the same plans (3^3 kernels, ``num_classes`` outputs), initialised as
    nnUNetTrainer does."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from dynamic_network_architectures.initialization.weight_init import InitWeights_He

    net = PlainConvUNet(1, PROXY_PLANS["n_stages"], PROXY_PLANS["features_per_stage"], torch.nn.Conv3d, 3,
                        PROXY_PLANS["strides"], 2, num_classes, 2, conv_bias=True, norm_op=torch.nn.InstanceNorm3d,
                        norm_op_kwargs={"eps": 1e-5, "affine": True},
                        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    net.apply(InitWeights_He(1e-2))
    return net


def proxy_row(net: torch.nn.Module, x: np.ndarray, theta: float) -> dict:
    """Per-layer errors of one network (hooks on every encoder/decoder op of an E3nnUNet) and of the softmax."""
    features, irreps = {}, {}

    def hook(name, ir):
        irreps[name] = ir
        return lambda module, inputs, output: features.__setitem__(name, output[0].numpy())

    if isinstance(net, E3nnUNet):
        for s, stage in enumerate(net.encoder.stages):
            for k, op in enumerate(stage):
                kind = _OP_KINDS.get(type(op).__name__, "block")
                ir = op.irreps_out if kind == "block" else stage[k + 1].irreps if kind == "blur" else op.irreps
                op.register_forward_hook(hook(f"enc{s}.{k}:{kind}", ir))
        for s, stage in enumerate(net.decoder.stages):
            net.decoder.upsample[s].register_forward_hook(hook(f"dec{s}:up", net.decoder.reduce[s].irreps_out))
            for k, op in enumerate(stage):
                op.register_forward_hook(hook(f"dec{s}.{k}:block", op.irreps_out))
    outputs = []
    for image in (x, rotate_x(x, theta)):
        with torch.no_grad():
            softmax = torch.softmax(net(torch.from_numpy(image)[None]), 1)[0].numpy()
        outputs.append({**features, "softmax": softmax})
    irreps["softmax"] = None
    row = {"input (spline round trip)": field_error(x, rotate_x(rotate_x(x, theta), -theta), 0.0)}
    row.update({k: field_error(outputs[0][k], outputs[1][k], theta, irreps[k]) for k in outputs[0]})
    return row


def run_proxy(args) -> None:
    torch.set_default_dtype(torch.float64)
    theta = np.deg2rad(args.angle)
    x = proxy_input(32, args.window)
    rows = {}
    for name in args.variants:
        if name == "stock":
            torch.manual_seed(0)
            rows[name] = proxy_row(_stock_network().eval(), x, theta)
        else:
            torch.manual_seed(0)
            net = E3nnUNet(1, 3, **PROXY_PLANS, spec=anatomy_spec(name)).eval()
            rows[name] = proxy_row(net, x, theta)
        print(f"{name}: softmax {rows[name]['softmax']:.3f}", flush=True)
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    print(f"\nproxy, {args.angle:g} degrees about the first axis, {'windowed' if args.window else 'plain'} input")
    print("| variant | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" if c in row else "" for c in columns) + " |")


# --- real anatomy (issue 17): per-layer errors on a real label map, whole field and thin-structure band ---

#: network variants of ``--anatomy``: the ``E3nnSpec`` of the trainer each name stands for (or ``stock``)
ANATOMY_TRAINERS = {"default": "nnUNetTrainerE3nn", "antialias": "nnUNetTrainerE3nnAntialias",
                    "paper": "nnUNetTrainerE3nnPaperBasis", "k3": "nnUNetTrainerE3nn_k3",
                    "compact": "nnUNetTrainerE3nnCompact"}
#: the structures 2-3 voxels across at 3 mm whose Dice issue 17 is about (``real_anatomy.LABELS`` names)
THIN_STRUCTURES = ("caudate", "putamen", "pallidum", "hippocampus")


def anatomy_spec(name: str) -> E3nnSpec:
    """The ``E3nnSpec`` of ``ANATOMY_TRAINERS[name]`` (``nnunet_equivariant.training.e3nn`` or
    ``.offgrid_trainers``), or of ``VARIANTS[name]``; ``ValueError`` naming an unknown ``name``."""
    if name in ANATOMY_TRAINERS:
        from nnunet_equivariant.training import e3nn, offgrid_trainers

        module = e3nn if hasattr(e3nn, ANATOMY_TRAINERS[name]) else offgrid_trainers
        return getattr(module, ANATOMY_TRAINERS[name]).spec
    if name in VARIANTS:
        return E3nnSpec(**VARIANTS[name])
    raise ValueError(f"unknown variant {name!r}; known: {[*ANATOMY_TRAINERS, *VARIANTS, 'stock']}")


def anatomy_case(theta: float, n: int = 32, spacing: float = 3.0, source: str = "MNI152NLin6Asym-lh",
                 seed: int = 0, folder=None) -> tuple[np.ndarray, np.ndarray]:
    """``(image (1, n, n, n) float64, labels (n, n, n) uint8)`` of one real-anatomy subject
    (``real_anatomy.sample_subject`` of ``source``, deformed, ``seed``) rendered at ``spacing`` mm in the pose
    rotated by ``theta`` (radians) about the first axis, with ``rotate_x``'s convention
    (``out(p) = subject(R^T p)`` about the volume centre, which is the centroid of the structures). T1-like
    class intensities and point-spread function as the benchmark's, without bias field and noise (they
    belong to the scanner and do not rotate with the subject; here only the network's error should
    differ between poses). The label map is rotated at 1 mm by nearest neighbour, no image is
    interpolated. The image is z-scored by its own mean and standard deviation (nnU-Net's normalisation
    for MRI). ``folder``: the atlases folder to read (default: the installed package's)."""
    from nnunet_equivariant.real_anatomy import TEMPLATES, read_aseg_sources, render_subject, sample_subject
    from nnunet_equivariant.synthetic_anatomy import AnatomyStyle

    templates = TEMPLATES if folder is None else sorted(p.name for p in Path(folder).iterdir() if p.is_dir())
    sources = {s.name: s for s in read_aseg_sources(folder, templates)}
    if source not in sources:
        raise ValueError(f"unknown label-map source {source!r}; known: {sorted(sources)}")
    subject = sample_subject(sources[source], np.random.default_rng(seed))
    style = AnatomyStyle(psf_sigma=0.425 * spacing, noise=0.0, bias=0.0)
    image, labels = render_subject(subject, (n, n, n), (spacing,) * 3, _rotation_x(theta), style)
    image = image.astype(np.float64)
    return ((image - image.mean()) / image.std())[None], labels


def boundary_band(labels: np.ndarray, structures, width: float = 2.0) -> np.ndarray:
    """Boolean ``(x, y, z)`` mask of the voxels at most ``width`` voxels (Euclidean, voxel centres) from the
    boundary of any of ``structures`` (label values) in ``labels``: the last ``width`` voxels inside a
    structure and the first ``width`` outside it, where its Dice is decided."""
    from scipy.ndimage import distance_transform_edt

    band = np.zeros(labels.shape, dtype=bool)
    for value in structures:
        mask = labels == value
        if not mask.any():
            continue
        band |= (mask & (distance_transform_edt(mask) <= width)) | (~mask & (distance_transform_edt(~mask) <= width))
    return band


def _coarse_mask(mask: np.ndarray, shape) -> np.ndarray:
    """``mask`` on a grid coarser by whole factors (a coarse voxel is in it if any of its fine voxels is)."""
    factors = [a // b for a, b in zip(mask.shape, shape)]
    if any(a != b * f for a, b, f in zip(mask.shape, shape, factors)):
        raise ValueError(f"mask shape {mask.shape} is not a whole multiple of {tuple(shape)}")
    return mask.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2]).any(axis=(1, 3, 5))


def masked_error(unrotated: np.ndarray, rotated: np.ndarray, theta: float, irreps, mask: np.ndarray) -> float:
    """``field_error``'s relative l2 error of ``D(R) rotate_x(unrotated)`` against ``rotated`` (both
    ``(C, x, y, z)``), on the voxels of ``mask`` (the fine grid's; pooled to coarser fields) inside the
    central ball of radius 0.4 x the grid."""
    from nnunet_equivariant.testing import irreps_D

    n = unrotated.shape[-1]
    grid = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2] * 3, indexing="ij"), -1)
    voxels = (np.linalg.norm(grid, axis=-1) <= 0.4 * n) & _coarse_mask(mask, unrotated.shape[1:])
    expected = rotate_x(unrotated, theta)
    if irreps is not None:
        D = irreps_D(irreps, torch.from_numpy(_rotation_x(theta))).numpy()
        expected = np.einsum("ij,j...->i...", D, expected)
    return float(np.linalg.norm((expected - rotated)[:, voxels]) / np.linalg.norm(rotated[:, voxels]))


def _layer_hooks(net: torch.nn.Module, features: dict, irreps: dict) -> None:
    """Forward hooks that store, for one sample, every layer's output in ``features`` (name -> ``(C, x, y,
    z)`` array, in forward order) and its irreps in ``irreps`` (``None``: plain channels). An ``E3nnUNet``:
    per block the convolution (``:conv``), the instance norm (``:norm``, recomputed from the stored
    convolution output: the block runs norm and gate fused) and the gate (``:gate``, the block's output);
    blurs, poolings, upsamplings (``:up``, after their blur) and the head (``logits``). Stock
    ``PlainConvUNet``: the head only."""
    def store(name, ir):
        irreps[name] = ir
        return lambda module, inputs, output: features.__setitem__(name, output[0].detach().numpy())

    def block_hooks(name, block):
        block.conv.register_forward_hook(store(f"{name}:conv", block.conv.irreps_out))
        irreps[f"{name}:norm"], irreps[f"{name}:gate"] = block.norm.irreps, block.irreps_out

        def after(module, inputs, output):
            conv_out = torch.from_numpy(features[f"{name}:conv"])[None]
            features[f"{name}:norm"] = module.norm(conv_out)[0].detach().numpy()
            features[f"{name}:gate"] = output[0].detach().numpy()
        block.register_forward_hook(after)

    if not isinstance(net, E3nnUNet):
        net.decoder.seg_layers[-1].register_forward_hook(store("logits", None))
        return
    for s, stage in enumerate(net.encoder.stages):
        blurs = 0  # numbered as without the anti-aliasing blur (pooling k = 0), so the variants' rows align
        for k, op in enumerate(stage):
            kind = _OP_KINDS.get(type(op).__name__, "block")
            blurs += kind == "blur"
            j = k - blurs + (kind == "blur")
            if kind == "block":
                block_hooks(f"enc{s}.{j}", op)
            else:
                ir = stage[k + 1].irreps if kind == "blur" else op.irreps
                op.register_forward_hook(store(f"enc{s}.{j}:{kind}", ir))
    for s, stage in enumerate(net.decoder.stages):
        net.decoder.upsample[s].register_forward_hook(store(f"dec{s}:up", net.decoder.reduce[s].irreps_out))
        for k, op in enumerate(stage):
            block_hooks(f"dec{s}.{k}", op)
    net.decoder.seg_layers[-1].register_forward_hook(store("logits", net.decoder.seg_layers[-1].irreps_out))


def anatomy_rows(net: torch.nn.Module, reference: np.ndarray, poses: dict) -> dict:
    """``{pose: {layer: (whole-field error, band error)}}`` of one network: the features of ``reference``
    (the 0-degree input, ``(1, n, n, n)``) rotated by the pose's angle (``rotate_x``, ``D(R)`` on irreps
    channels) against the features of the pose's input. ``poses``: name -> ``(theta (radians), input (1, n,
    n, n), band)``, ``band`` the fine-grid mask of ``masked_error`` in that pose."""
    features, irreps = {}, {}
    _layer_hooks(net, features, irreps)
    irreps["input"] = irreps["softmax"] = None

    def forward(image):
        features.clear()
        with torch.no_grad():
            softmax = torch.softmax(net(torch.from_numpy(image)[None]), 1)[0].numpy()
        return {"input": image, **features, "softmax": softmax}

    unrotated = forward(reference)
    rows = {}
    for pose, (theta, image, band) in poses.items():
        rotated = forward(image)
        rows[pose] = {k: (field_error(unrotated[k], rotated[k], theta, irreps[k]),
                          masked_error(unrotated[k], rotated[k], theta, irreps[k], band)) for k in unrotated}
    return rows


def trained_network(variant: str, model_folder, num_classes: int) -> torch.nn.Module:
    """The ``E3nnUNet`` of ``anatomy_spec(variant)`` on the 3d_fullres plans of an nnU-Net model folder
    (``.../TRAINER__PLANS__3d_fullres``), with the weights of its ``fold_0/checkpoint_final.pth`` (float64,
    no deep supervision); ``ValueError`` naming a folder without them."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_equivariant.networks.e3nn_unet import e3nn_unet_from_plans

    folder = Path(model_folder)
    checkpoint = folder / "fold_0" / "checkpoint_final.pth"
    if not (folder / "plans.json").is_file() or not checkpoint.is_file():
        raise ValueError(f"{folder}: not a trained nnU-Net model folder (plans.json and "
                         f"fold_0/checkpoint_final.pth expected)")
    configuration = PlansManager(str(folder / "plans.json")).get_configuration("3d_fullres")
    net = e3nn_unet_from_plans(configuration, anatomy_spec(variant), 1, num_classes, deep_supervision=False)
    net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"])
    return net.double()


def run_anatomy(args) -> None:
    """Per-layer off-grid errors of each variant (random weights, float64, eval) and of each ``--weights``
    network (trained: :func:`trained_network`) on a real subcortical label map rendered at 3 mm
    (``anatomy_case``), whole field and band of ``args.band_width`` voxels around the boundaries of
    ``args.band_structures`` (default ``THIN_STRUCTURES``). Poses, about the first axis: each of
    ``args.angles`` rendered in that pose (``N deg``: what a scan in that pose shows), and for each off-grid angle the
    0-degree rendering rotated by a cubic spline (``N deg spline``: the network's own error, without the
    rendering's partial-volume differences between poses)."""
    from nnunet_equivariant.real_anatomy import LABELS

    torch.set_default_dtype(torch.float64)
    reference, labels0 = anatomy_case(0.0)
    structures = args.band_structures
    unknown = sorted(set(structures) - set(LABELS))
    if unknown:
        raise ValueError(f"unknown structures {unknown} in --band-structures; known: {sorted(LABELS)}")
    thin = [LABELS[name] for name in structures]
    poses = {}
    for angle in args.angles:
        theta = np.deg2rad(angle)
        image, labels = anatomy_case(theta)
        band = boundary_band(labels, thin, args.band_width)
        present = {name: int((labels == LABELS[name]).sum()) for name in structures}
        print(f"{angle:g} degrees: structure voxels {present}, band voxels {int(band.sum())}", flush=True)
        poses[f"{angle:g} deg"] = (theta, image, band)
        if angle % 90:
            poses[f"{angle:g} deg spline"] = (theta, rotate_x(reference, theta), band)
    num_classes = len(LABELS)
    networks = {}
    for name in args.variants:
        if name == "stock":
            networks[name] = lambda: _stock_network(num_classes)
        else:
            networks[name] = lambda name=name: E3nnUNet(1, num_classes, **PROXY_PLANS, spacing=(3.0, 3.0, 3.0),
                                                        spec=anatomy_spec(name))
    for item in args.weights or []:
        name, _, folder = item.partition("=")
        if not folder:
            raise ValueError(f"--weights {item!r}: expected VARIANT=MODEL_FOLDER")
        networks[f"{name}, trained ({Path(folder).name.split('__')[0]})"] = \
            lambda name=name, folder=folder: trained_network(name, folder, num_classes)
    results = {}
    for name, build in networks.items():
        torch.manual_seed(0)
        net = build().eval()
        results[name] = anatomy_rows(net, reference, poses)
        for pose, row in results[name].items():
            print(f"{name} {pose}: softmax {row['softmax'][0]:.3f} (band {row['softmax'][1]:.3f})", flush=True)
    for pose in poses:
        # the variant with the most layers first (the blurs of the anti-aliased one fall into place)
        layers = list(dict.fromkeys(k for rows in sorted(results.values(), key=lambda r: -len(r[pose]))
                                    for k in rows[pose]))
        print(f"\nreal anatomy (MNI152NLin6Asym-lh subject, 3 mm, 32^3), {pose} about the first axis; "
              f"whole field / band of {args.band_width:g} voxels around {', '.join(structures)}")
        print("| layer | " + " | ".join(results) + " |")
        print("|---" * (len(results) + 1) + "|")
        for layer in layers:
            cells = [f"{rows[pose][layer][0]:.3f} / {rows[pose][layer][1]:.3f}" if layer in rows[pose] else ""
                     for rows in results.values()]
            print(f"| {layer} | " + " | ".join(cells) + " |")


def run_context(args) -> None:
    """The plain proxy with real content around every patch: one smoothed-noise field of 96^3, the patch
    (``--patch-sizes``) cropped from its centre unrotated and from its cubic-spline rotation (so the
    corners of the rotated patch hold new noise of the same statistics, as a rotated scan would, instead of
    ``mode="nearest"`` padding); softmax error in a fixed ball of radius 12.8 voxels (the 32^3 proxy's)."""
    from scipy.ndimage import gaussian_filter

    torch.set_default_dtype(torch.float64)
    theta, n_field = np.deg2rad(args.angle), 96
    field = gaussian_filter(np.random.default_rng(0).standard_normal((n_field,) * 3), 2.0)
    field = ((field - field.mean()) / field.std())[None]
    rotated_field = rotate_x(field, theta)
    print(f"| variant | {' | '.join(f'{n}^3 patch' for n in args.patch_sizes)} |")
    print("|---" * (len(args.patch_sizes) + 1) + "|")
    for name in args.variants:
        torch.manual_seed(0)
        net = (_stock_network() if name == "stock" else E3nnUNet(1, 3, **PROXY_PLANS, spec=anatomy_spec(name))).eval()
        errors = []
        for n in args.patch_sizes:
            o = (n_field - n) // 2
            grid = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2] * 3, indexing="ij"), -1)
            ball = np.linalg.norm(grid, axis=-1) <= 12.8
            outputs = []
            for volume in (field, rotated_field):
                patch = np.ascontiguousarray(volume[:, o:o + n, o:o + n, o:o + n])
                with torch.no_grad():
                    outputs.append(torch.softmax(net(torch.from_numpy(patch)[None]), 1)[0].numpy())
            expected = rotate_x(outputs[0], theta)
            errors.append(np.linalg.norm((expected - outputs[1])[:, ball]) / np.linalg.norm(outputs[1][:, ball]))
        print(f"| {name} | " + " | ".join(f"{e:.3f}" for e in errors) + " |", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="nnU-Net checkpoint of the demo's nnUNetTrainerE3nn")
    parser.add_argument("--angle", type=float, default=45.0)
    parser.add_argument("--edge-width", type=float, nargs="+", default=[0.0, 0.8])
    parser.add_argument("--radial-basis", default=DEFAULT_RADIAL_BASIS, choices=list(RADIAL_BASES),
                        help="rods and discs: the kernel basis of the checkpoint (smooth_finite for "
                             "nnUNetTrainerE3nnPaperBasis)")
    parser.add_argument("--proxy", action="store_true", help="issue 13's proxy, one row per network variant")
    parser.add_argument("--window", action="store_true", help="proxy input faded out by a spherical window")
    parser.add_argument("--context", action="store_true",
                        help="proxy patches cropped from a larger field and its rotation (see run_context)")
    parser.add_argument("--patch-sizes", type=int, nargs="+", default=[32, 48, 64], help="for --context")
    parser.add_argument("--anatomy", action="store_true",
                        help="per-layer errors on a real label map at 3 mm, whole field and thin-structure band")
    parser.add_argument("--angles", type=float, nargs="+", default=[45.0, 90.0], help="for --anatomy")
    parser.add_argument("--band-width", type=float, default=2.0,
                        help="for --anatomy: voxels either side of the thin structures' boundaries")
    parser.add_argument("--band-structures", nargs="+", default=list(THIN_STRUCTURES),
                        help="for --anatomy: the structures whose boundaries make the band (real_anatomy.LABELS)")
    parser.add_argument("--weights", nargs="+", metavar="VARIANT=MODEL_FOLDER",
                        help="for --anatomy: also the network of VARIANT with the trained weights of an nnU-Net "
                             "model folder (TRAINER__PLANS__3d_fullres; fold 0's checkpoint_final.pth)")
    parser.add_argument("--variants", nargs="+", default=None, choices=[*VARIANTS, *ANATOMY_TRAINERS, "stock"],
                        help=f"default: {[*VARIANTS, 'stock']}; with --anatomy {[*ANATOMY_TRAINERS, 'stock']}")
    args = parser.parse_args(argv)
    if args.variants is None:
        anatomy_default = [] if args.weights else [*ANATOMY_TRAINERS, "stock"]
        args.variants = anatomy_default if args.anatomy else [*VARIANTS, "stock"]
    if args.anatomy:
        return run_anatomy(args)
    if args.context:
        return run_context(args)
    if args.proxy:
        return run_proxy(args)
    torch.manual_seed(0)
    net = E3nnUNet(1, 3, 3, [32, 64, 128], [1, 2, 2], 2, 2,  # the demo's plans
                   spec=E3nnSpec(radial_basis=args.radial_basis)).double().eval()
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
