"""``compare`` of stock nnU-Net and the steerable trainer on nnU-Net's own ResEnc M plans, on the demo data.

The report docs/compare_resenc_demo.md was made with this script (a CPU smoke-level run):

1. writes the demo's synthetic dataset (``nnunet_equivariant.demo``: rods and discs aligned with x in
   training, ``SCHEDULES["cpu"]``'s case count and shape, ``DEMO_GEOMETRY``);
2. plans and preprocesses it with nnU-Net's own command, ``nnUNetv2_plan_and_preprocess -pl
   nnUNetPlannerResEncM`` (plans ``nnUNetResEncUNetMPlans``, a ``ResidualEncoderUNet``); with
   ``--batch-size`` the plans' batch size is then overwritten (nnU-Net's planner gives these tiny cases a
   large batch; a plans edit a user may make too, as tests/test_e2e_resenc.py does);
3. trains fold 0 of ``nnUNetTrainer`` (stock, its ``ResidualEncoderUNet``) and of ``nnUNetTrainerE3nn`` (an
   ``E3nnResEncUNet`` built from the same plans) for ``--epochs-stock`` / ``--epochs-e3nn`` epochs of
   ``--iterations`` iterations (the demo's trainer loop, then nnU-Net's final validation);
4. runs ``compare`` with ``-p nnUNetResEncUNetMPlans`` for both, stock first (the reference of the ratios).

    python benchmarks/compare_resenc_demo.py --output /tmp/resenc_demo [--epochs-stock 5] [--epochs-e3nn 8]
        [--iterations 25] [--batch-size 2] [--device cpu]

Everything lives under ``--output`` (nnU-Net's ``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``
and ``compare/``); the report is ``OUTPUT/compare/report.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PLANS = "nnUNetResEncUNetMPlans"
TRAINERS = ("nnUNetTrainer", "nnUNetTrainerE3nn")  # stock first: the reference of every ratio


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--epochs-stock", type=int, default=5)
    parser.add_argument("--epochs-e3nn", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=25, help="training iterations per epoch")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="overwrite the plans' batch size (default: keep nnU-Net's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    for name in ("epochs_stock", "epochs_e3nn", "iterations"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")

    import torch

    from nnunet_equivariant.demo import (
        DEMO_DATASET_ID,
        DEMO_GEOMETRY,
        SCHEDULES,
        _set_nnunet_environment,
        _train,
    )
    from nnunet_equivariant.evaluation.compare import compare
    from nnunet_equivariant.synthetic import write_rods_and_discs_dataset

    device = torch.device(args.device)
    output = Path(args.output).resolve()
    if output.exists() and any(output.iterdir()):
        if not args.overwrite:
            raise FileExistsError(f"output folder {output} is not empty; pass --overwrite to replace it")
        shutil.rmtree(output)
    _set_nnunet_environment(output, device)
    schedule = dataclasses.replace(SCHEDULES["cpu"], iterations_per_epoch=args.iterations)

    print(f"[1/4] demo dataset: {schedule.num_train} training, {schedule.num_test} test cases of {schedule.shape}",
          flush=True)
    write_rods_and_discs_dataset(output / "nnUNet_raw", DEMO_DATASET_ID, name="RodsDiscsDemo",
                                 num_train=schedule.num_train, num_test=schedule.num_test, shape=schedule.shape,
                                 train_orientation="fixed", test_orientation="fixed", seed=1, geometry=DEMO_GEOMETRY)
    print("[2/4] nnUNetv2_plan_and_preprocess -pl nnUNetPlannerResEncM", flush=True)
    # without nnUNet_n_proc_DA=0 (set above for training without workers): nnU-Net's planner passes it to
    # torch.set_num_threads while estimating its VRAM, which refuses 0
    planning_env = {k: v for k, v in os.environ.items() if k != "nnUNet_n_proc_DA"}
    subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", str(DEMO_DATASET_ID), "-c", "3d_fullres", "-np", "1",
                    "-pl", "nnUNetPlannerResEncM"], check=True, env=planning_env)
    plans_file = next((output / "nnUNet_preprocessed").glob(f"Dataset{DEMO_DATASET_ID}_*")) / f"{PLANS}.json"
    plans = json.loads(plans_file.read_text())
    config = plans["configurations"]["3d_fullres"]
    print(f"      plans: patch {config['patch_size']}, batch {config['batch_size']}, "
          f"{config['architecture']['network_class_name']}", flush=True)
    if args.batch_size is not None:
        print(f"      batch size {config['batch_size']} -> {args.batch_size} (--batch-size)", flush=True)
        config["batch_size"] = args.batch_size
        plans_file.write_text(json.dumps(plans, indent=2))
    epochs = {"nnUNetTrainer": args.epochs_stock, "nnUNetTrainerE3nn": args.epochs_e3nn}
    for trainer in TRAINERS:
        print(f"[3/4] training {trainer}: {epochs[trainer]} epochs of {args.iterations} iterations on {device}",
              flush=True)
        _train(trainer, PLANS, epochs[trainer], schedule, device)
    print("[4/4] compare", flush=True)
    command = " ".join(["python benchmarks/compare_resenc_demo.py", *(argv if argv is not None else sys.argv[1:])])
    result = compare(DEMO_DATASET_ID, TRAINERS, output / "compare", plans=[PLANS, PLANS], folds=[0],
                     planes=["axial"], angles=schedule.angles, device=str(device), cost_repeats=3,
                     command_line=command)
    print(f"report: {result.report}\ncsv: {result.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
