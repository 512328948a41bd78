"""Plans written by nnU-Net's own residual-encoder planners (``nnUNetPlannerResEncM/L/XL``), for tests.

Two tiny synthetic datasets (rods and discs, 3 training cases): isotropic 1 mm at 64^3 (5 stages, isotropic
2x strides, as the presets plan most CT/MR data) and anisotropic (3, 0.8, 0.8) mm at 16 x 64 x 64 (in-plane
strides first, kernels 1x3x3 at the top). nnU-Net extracts the fingerprints and runs the three planners
in one subprocess (its own code, its own ``plans.json``); the tests read the ``3d_fullres`` configurations.
On data this small the three presets plan the same topology (the patch is clipped to the median image);
the memory targets part only on larger images.
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

PRESETS = {"M": "nnUNetPlannerResEncM", "L": "nnUNetPlannerResEncL", "XL": "nnUNetPlannerResEncXL"}
DATASETS = {  # name -> (dataset id, image shape, spacing)
    "isotropic": (971, (64, 64, 64), (1.0, 1.0, 1.0)),
    "anisotropic": (972, (16, 64, 64), (3.0, 0.8, 0.8)),
}

_SCRIPT = textwrap.dedent("""
    import sys
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments
    from nnunet_equivariant.synthetic import write_rods_and_discs_dataset

    if __name__ == "__main__":
        raw, datasets, planners = sys.argv[1], eval(sys.argv[2]), sys.argv[3].split(",")
        for dataset_id, shape, spacing in datasets.values():
            write_rods_and_discs_dataset(raw, dataset_id, name="ResEncPlans", num_train=3, num_test=0, shape=shape,
                                         spacing=spacing, seed=dataset_id)
        ids = [d[0] for d in datasets.values()]
        extract_fingerprints(ids, num_processes=1, check_dataset_integrity=False, verbose=False)
        for planner in planners:
            plan_experiments(ids, planner)
""")


@functools.cache
def resenc_plans_root() -> Path:
    """The nnU-Net preprocessed folder holding the planned datasets (planned once per test process)."""
    root = Path(tempfile.mkdtemp(prefix="resenc_plans_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    script = root / "plan.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
           "nnUNet_results": str(root / "results"), "nnUNet_def_n_proc": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), env["nnUNet_raw"], repr(DATASETS), ",".join(PRESETS.values())],
                          env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"nnU-Net's ResEnc planners failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return root / "preprocessed"


def resenc_plans(dataset: str, preset: str) -> dict:
    """The whole ``nnUNetResEncUNet{preset}Plans.json`` nnU-Net wrote for ``dataset`` (see ``DATASETS``)."""
    dataset_id = DATASETS[dataset][0]
    path = resenc_plans_root() / f"Dataset{dataset_id:03d}_ResEncPlans" / f"nnUNetResEncUNet{preset}Plans.json"
    return json.loads(path.read_text())


def resenc_configuration(dataset: str, preset: str = "M", patch_size=None):
    """nnU-Net's ``ConfigurationManager`` of the ``3d_fullres`` configuration, optionally with a smaller
    ``patch_size`` (for float64 tests; the topology stays the planner's)."""
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    configuration = resenc_plans(dataset, preset)["configurations"]["3d_fullres"]
    if patch_size is not None:
        configuration = {**configuration, "patch_size": list(patch_size)}
    return ConfigurationManager(configuration)


def with_features(configuration, features):
    """The same configuration with other ``features_per_stage`` (small widths keep float64 tests fast; the
    strides, kernels, blocks, spacing and patch stay the planner's)."""
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    plans = json.loads(json.dumps(configuration.configuration))
    plans["architecture"]["arch_kwargs"]["features_per_stage"] = list(features)
    return ConfigurationManager(plans)
