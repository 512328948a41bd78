"""Predict time with ``--rotation_tta grid`` for stock nnU-Net vs the steerable networks, same run.

Per patch (the unit of nnU-Net's sliding window: predict time = tiles x this), through
``RotationTTAPredictor._internal_maybe_mirror_and_predict`` as ``nnunet-equivariant predict`` runs it, with
each trainer's checkpoint mirroring axes (stock (0, 1, 2), SO(3) (0,), O(3) none):

- ``PlainConvUNet`` of nnU-Net's default 3d_fullres topology for an isotropic ``--patch`` (stock),
- ``E3nnUNet`` built from the same plans by ``nnUNetTrainerE3nn`` (SO(3)) and ``nnUNetTrainerE3nnO3``.

Random weights (time does not depend on them). Times are the fastest of ``--repeats``, all contenders
interleaved so that load hits each alike; ``--threads 1 --clock cpu`` measures the computing thread's CPU time,
which other processes on a shared machine barely disturb.

    python benchmarks/bench_tta.py [--patch 32] [--repeats 2] [--threads 1] [--clock cpu|wall]
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mirror import LABELS, default_plans  # noqa: E402

from nnunet_equivariant.inference.rotation_tta import RotationTTAPredictor  # noqa: E402
from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn, nnUNetTrainerE3nnO3  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=32, help="isotropic patch edge (a power of two >= 16)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu",
                        help="cpu: CPU time of the calling thread (needs --threads 1)")
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu measures one thread: use --threads 1")
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter

    pm = PlansManager(default_plans(args.patch))
    cm = pm.get_configuration("3d_fullres")
    stock = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                   cm.network_arch_init_kwargs_req_import, 1, len(LABELS), deep_supervision=False)
    networks = {
        "stock nnU-Net (PlainConvUNet)": ("nnUNetTrainer", (0, 1, 2), stock),
        "steerable SO(3) (nnUNetTrainerE3nn)": ("nnUNetTrainerE3nn", (0,),
                                                nnUNetTrainerE3nn.build_network_architecture(pm, cm, 1, len(LABELS),
                                                                                             False)),
        "steerable O(3) (nnUNetTrainerE3nnO3)": ("nnUNetTrainerE3nnO3", None,
                                                 nnUNetTrainerE3nnO3.build_network_architecture(pm, cm, 1,
                                                                                                len(LABELS), False)),
    }
    symmetries = {"nnUNetTrainer": "none", "nnUNetTrainerE3nn": "so3", "nnUNetTrainerE3nnO3": "o3"}
    torch.manual_seed(0)
    x = torch.randn(1, 1, *cm.patch_size)
    contenders = {}
    for name, (trainer, axes, network) in networks.items():
        for mode in ("none", "grid"):
            predictor = RotationTTAPredictor(rotation_tta=mode, symmetry=symmetries[trainer],
                                             device=torch.device("cpu"), allow_tqdm=False)
            predictor.manual_initialization(network.eval(), pm, cm, [network.state_dict()],
                                            {"labels": LABELS, "file_ending": ".nii.gz"}, trainer, axes)
            passes = len(predictor.tta_transforms())
            contenders[(name, mode)] = (predictor, passes)

    times = {key: [] for key in contenders}
    with torch.no_grad():
        for predictor, _ in contenders.values():  # warm-up (kernel caches, allocator)
            predictor.network(x)
        for _ in range(args.repeats):
            for key, (predictor, _) in contenders.items():
                start = clock()
                predictor._internal_maybe_mirror_and_predict(x)
                times[key].append(clock() - start)
    best = {key: min(t) for key, t in times.items()}

    stock_grid = best[("stock nnU-Net (PlainConvUNet)", "grid")]
    print(f"patch {args.patch}^3, {args.threads} thread(s), {args.clock} clock, fastest of {args.repeats}; "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print("| network | passes (mirroring only) | passes (grid) | s/patch (mirroring only) | s/patch (grid) | "
          "grid / mirroring only | grid: vs stock |")
    print("|---|---|---|---|---|---|---|")
    for name in networks:
        (_, p_none), (_, p_grid) = contenders[(name, "none")], contenders[(name, "grid")]
        t_none, t_grid = best[(name, "none")], best[(name, "grid")]
        print(f"| {name} | {p_none} | {p_grid} | {t_none:.2f} | {t_grid:.2f} | {t_grid / t_none:.2f}x | "
              f"{t_grid / stock_grid:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
