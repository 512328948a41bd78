"""Speed of the mirror-symmetric layer, network and test-time mirroring against stock nnU-Net, same run.

1. ``MirrorSymmetricConv3d`` vs ``nn.Conv3d`` of the same shape: eval forward (no_grad, cached kernel)
   and a training step (forward + backward, kernel assembled every call). Goals: <= 1.05x, <= 1.15x.
2. ``MirrorUNet`` (f123, keep architecture) vs ``PlainConvUNet`` on the same plans (nnU-Net's default
   3d_fullres topology for the patch), batch 2, deep supervision on in training as nnU-Net trains.
   ``nnUNetTrainerMirrorKeepParams``' wider network is listed for information (it trades compute for
   parameters).
3. Sliding-window prediction with nnU-Net's predictor: an f123 model with its non-redundant mirroring (1
   pass per tile) vs stock 8-pass mirroring on the same case; reports whether the segmentations agree.
   Default: a randomly initialised f123 MirrorUNet (timing does not depend on the weights); with
   ``--model-folder`` and ``--case``: a trained model and an image in its dataset's format.

Times are the fastest of ``--repeats`` runs (the least disturbed by other load), the two contenders
interleaved so that load hits both. On a machine shared with other work, ``--threads 1 --clock cpu``
measures the CPU time of the one computing thread, which other processes barely disturb.

    python benchmarks/bench_mirror.py [--threads 2] [--clock wall|cpu] [--patch 64] [--repeats 5]
"""
from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import nn

from nnunet_equivariant.layers import MirrorSymmetricConv3d
from nnunet_equivariant.networks.mirror_unet import mirror_unet_from_plans

LABELS = {"background": 0, "a": 1, "b": 2}


def default_plans(patch: int) -> dict:
    """nnU-Net's default 3d_fullres topology for an isotropic ``patch``^3 (2x pooling down to 4 voxels)."""
    n_stages = 1 + int(np.log2(patch // 4))
    features = [min(32 * 2 ** i, 320) for i in range(n_stages)]
    return {
        "dataset_name": "Benchmark", "plans_name": "nnUNetPlans", "label_manager": "LabelManager",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [patch] * 3, "spacing": [1.0, 1.0, 1.0],
            "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {}, "resampling_fn_seg_kwargs": {}, "resampling_fn_probabilities_kwargs": {},
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": n_stages, "features_per_stage": features, "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [[3, 3, 3]] * n_stages, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
                    "n_conv_per_stage": [2] * n_stages, "n_conv_per_stage_decoder": [2] * (n_stages - 1),
                    "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                    "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
                },
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
            },
        }},
    }


CLOCK = time.perf_counter


def timed(fn: Callable[[], object]) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


def compare(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest seconds per contender; one warm-up each, then the contenders interleaved."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name].append(timed(fn))
    return {name: min(t) for name, t in times.items()}


def train_step(net: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step():
        net.train()
        out = net(x)
        loss = sum(o.float().mean() for o in out) if isinstance(out, (list, tuple)) else out.float().mean()
        loss.backward()
        net.zero_grad(set_to_none=True)
    return step


def eval_forward(net: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def forward():
        net.eval()
        with torch.no_grad():
            net(x)
    return forward


def row(name: str, stock: float, ours: float, goal: str = "") -> str:
    return f"| {name} | {stock * 1e3:.1f} | {ours * 1e3:.1f} | {ours / stock:.3f}x | {goal} |"


def bench_layers(repeats: int) -> list[str]:
    lines = []
    for cin, cout, size in [(32, 32, 64), (320, 320, 8)]:
        x = torch.randn(2, cin, size, size, size)
        stock = nn.Conv3d(cin, cout, 3, padding=1)
        for symmetry in ("f1", "f123"):
            ours = MirrorSymmetricConv3d(cin, cout, 3, padding=1, symmetry=symmetry)
            shape = f"{cin}->{cout}, 3^3, 2x{size}^3, {symmetry}"
            t = compare({"stock": eval_forward(stock, x), "ours": eval_forward(ours, x)}, repeats)
            lines.append(row(f"conv eval forward ({shape})", t["stock"], t["ours"], "<= 1.05x"))
            t = compare({"stock": train_step(stock, x), "ours": train_step(ours, x)}, repeats)
            lines.append(row(f"conv train step ({shape})", t["stock"], t["ours"], "<= 1.15x"))
    return lines


def bench_networks(plans: dict, repeats: int) -> list[str]:
    cm = PlansManager(plans).get_configuration("3d_fullres")
    x = torch.randn(2, 1, *cm.patch_size)
    stock = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                   cm.network_arch_init_kwargs_req_import, 1, 3, deep_supervision=True)
    nets = {
        "MirrorUNet f123": mirror_unet_from_plans(cm, 1, 3, "f123", deep_supervision=True),
        "MirrorUNet f1": mirror_unet_from_plans(cm, 1, 3, "f1", deep_supervision=True),
        "MirrorUNet f123 keep-params": mirror_unet_from_plans(cm, 1, 3, "f123", deep_supervision=True,
                                                              keep_parameters=True),
    }
    patch = "x".join(map(str, cm.patch_size))
    lines = []
    for name, net in nets.items():
        goal = "(wider: info)" if "keep" in name else None
        t = compare({"stock": eval_forward(stock, x), "ours": eval_forward(net, x)}, repeats)
        lines.append(row(f"{name} eval forward (2x{patch})", t["stock"], t["ours"], goal or "<= 1.05x"))
        t = compare({"stock": train_step(stock, x), "ours": train_step(net, x)}, repeats)
        lines.append(row(f"{name} train step (2x{patch})", t["stock"], t["ours"], goal or "<= 1.15x"))
    n_stock = sum(p.numel() for p in stock.parameters())
    for name, net in nets.items():
        n = sum(p.numel() for p in net.parameters())
        lines.append(f"| parameters {name} | {n_stock:,} | {n:,} | {n / n_stock:.3f}x | |")
    return lines


def bench_prediction(plans: dict, repeats: int, model_folder: str | None, case: str | None) -> list[str]:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    if model_folder:
        predictor.initialize_from_trained_model_folder(model_folder, use_folds=None)
        from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy

        reader = predictor.plans_manager.image_reader_writer_class()
        image, properties = reader.read_images([case])
        adapter = PreprocessAdapterFromNpy([image], [None], [properties], [None], predictor.plans_manager,
                                           predictor.dataset_json, predictor.configuration_manager, 1)
        data = next(adapter)["data"]
        reduced_axes = predictor.allowed_mirroring_axes
        what = f"trained model, case {tuple(data.shape[1:])}"
    else:
        pm = PlansManager(plans)
        cm = pm.get_configuration("3d_fullres")
        network = mirror_unet_from_plans(cm, 1, len(LABELS), "f123", deep_supervision=False)
        predictor.manual_initialization(network, pm, cm, [network.state_dict()], {"labels": LABELS,
                                        "file_ending": ".nii.gz"}, "nnUNetTrainerMirror", None)
        size = int(cm.patch_size[0] * 1.5)
        torch.manual_seed(0)
        data = torch.randn(1, size, size, size)
        reduced_axes = None
        what = f"random f123 model, case {tuple(data.shape[1:])}"
    logits = {}

    def predict(axes):
        def run():
            predictor.allowed_mirroring_axes = axes
            logits[axes] = predictor.predict_sliding_window_return_logits(data)
        return run

    t = compare({"stock": predict((0, 1, 2)), "ours": predict(reduced_axes)}, repeats)
    same = (logits[(0, 1, 2)].argmax(0) == logits[reduced_axes].argmax(0)).float().mean().item()
    diff = (logits[(0, 1, 2)].float() - logits[reduced_axes].float()).abs().max().item()
    return [row(f"predict, mirror axes {reduced_axes} vs (0, 1, 2) ({what})", t["stock"], t["ours"], "~0.125x"),
            f"| same segmentation | | {same * 100:.3f} % of voxels | max logit diff {diff:.1e} (float16 accumulator) | |"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--patch", type=int, default=64, help="isotropic patch edge (a power of two >= 16)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: CPU time of the calling thread (needs --threads 1)")
    parser.add_argument("--model-folder", help="trained f123 model folder (nnUNet_results/.../Trainer__Plans__cfg)")
    parser.add_argument("--case", help="image file of that model's dataset (with --model-folder)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["layers", "networks", "prediction"])
    args = parser.parse_args(argv)
    if bool(args.model_folder) != bool(args.case):
        parser.error("--model-folder and --case go together")
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu measures one thread: use it with --threads 1")
    global CLOCK
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                   platform.processor())
    print(f"{cpu}, {args.threads} thread(s), {args.clock} clock, torch {torch.__version__}, "
          f"Python {platform.python_version()}")
    print("| what | stock (ms) | mirror (ms) | ratio | goal |")
    print("| --- | --- | --- | --- | --- |")
    plans = default_plans(args.patch)
    if "layers" not in args.skip:
        print("\n".join(bench_layers(args.repeats)), flush=True)
    if "networks" not in args.skip:
        print("\n".join(bench_networks(plans, args.repeats)), flush=True)
    if "prediction" not in args.skip:
        print("\n".join(bench_prediction(plans, args.repeats, args.model_folder, args.case)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
