"""nnUNetPlannerEquivariant: isotropic spacing, 5^3 kernels, divisible patches, sized by the memory estimate."""
import functools
import json

import numpy as np
import pytest
import torch
from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiment_dataset
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnunet_equivariant.planning.memory import estimate_training_bytes
from nnunet_equivariant.planning.planner import PLANS_IDENTIFIER, nnUNetPlannerEquivariant, networks_on_plans
from nnunet_equivariant.synthetic import write_rods_and_discs_dataset

GiB = 1024 ** 3


@pytest.fixture
def ct_like_dataset(tmp_path, monkeypatch):
    """A dataset whose fingerprint says: 0.8 x 0.8 mm slices 5 mm apart, about 512 x 512 x 60 voxels."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    dataset = write_rods_and_discs_dataset(tmp_path / "nnUNet_raw", 904, num_train=3, num_test=0, shape=(8, 8, 8))
    fingerprint = {  # nnU-Net's array order: z first
        "spacings": [[5.0, 0.8, 0.8], [5.0, 0.78, 0.78], [4.0, 0.82, 0.82]],
        "shapes_after_crop": [[60, 512, 512], [64, 512, 512], [70, 480, 480]],
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 2.0, "mean": 1.0, "median": 1.0, "min": 0.0, "percentile_00_5": 0.1, "percentile_99_5": 1.9,
            "std": 0.2}},
    }
    folder = tmp_path / "nnUNet_preprocessed" / dataset.name
    folder.mkdir(parents=True)
    (folder / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    return 904


def _plan(dataset_id, target_gb):
    plans, identifier = plan_experiment_dataset(dataset_id, nnUNetPlannerEquivariant, gpu_memory_target_in_gb=target_gb)
    return plans, identifier


def test_plans_are_isotropic_with_the_default_trainers_kernels_and_fit_the_memory_target(ct_like_dataset, tmp_path):
    plans, identifier = _plan(ct_like_dataset, 8)
    assert identifier == PLANS_IDENTIFIER == plans["plans_name"]
    saved = json.loads((tmp_path / "nnUNet_preprocessed" / "Dataset904_RodsDiscs" / f"{identifier}.json").read_text())
    assert list(saved["configurations"]) == ["3d_fullres"], "one isotropic 3D configuration"
    config = saved["configurations"]["3d_fullres"]

    expected = (5.0 * 0.8 * 0.8) ** (1 / 3)  # geometric mean of the median spacing
    assert config["spacing"] == pytest.approx([expected] * 3), "isotropic target spacing"
    assert saved["transpose_forward"] == [0, 1, 2]
    for kwargs in (config["resampling_fn_data_kwargs"], config["resampling_fn_seg_kwargs"],
                   config["resampling_fn_probabilities_kwargs"]):
        assert kwargs["force_separate_z"] is False, "anisotropic data are resampled in 3D, not slice-wise"

    arch = config["architecture"]
    assert arch["network_class_name"].endswith("PlainConvUNet"), "stock trainers build from these plans"
    kwargs = arch["arch_kwargs"]
    n = kwargs["n_stages"]
    assert kwargs["kernel_sizes"] == [[3, 3, 3]] * n, "nnUNetTrainerE3nn's 3^3 (COMPACT_SPEC)"
    assert kwargs["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * (n - 1), "isotropic 2x pooling"
    patch = np.array(config["patch_size"])
    assert np.all(patch % 2 ** (n - 1) == 0), "patch divisible by 2^poolings on every axis"
    assert patch.min() // 2 ** (n - 1) >= 4, "bottleneck of at least 4 voxels"
    median_resampled = np.array([62 * 5.0, 512 * 0.8, 512 * 0.8]) / expected
    assert np.all(patch <= np.ceil(median_resampled / 2 ** (n - 1)) * 2 ** (n - 1))

    networks = networks_on_plans(config, 1, 3)
    assert set(networks) == {"PlainConvUNet", "E3nnUNet"}
    batch = config["batch_size"]
    largest = max(estimate_training_bytes(net, patch, batch) for net in networks.values())
    assert batch >= 2 and largest <= 8 * GiB, "a training step of the largest network fits the target"
    assert max(estimate_training_bytes(net, patch, batch + 1) for net in networks.values()) > 8 * GiB, \
        "the batch size uses the memory target"

    small, _ = _plan(ct_like_dataset, 3)
    small = small["configurations"]["3d_fullres"]
    assert np.prod(small["patch_size"]) * small["batch_size"] < np.prod(patch) * batch, "less memory, less data"


@pytest.mark.parametrize("trainer_name, first_irreps", [("nnUNetTrainerE3nn_4x4x4", "4x0e+4x1e+4x2e"),
                                                          ("nnUNetTrainerE3nnLean", "4x0e+2x1e+1x2e"),
                                                          ("nnUNetTrainerE3nnAntialias", "8x0e+4x1e+2x2e")])
def test_plans_sized_for_the_network_the_trainer_builds(ct_like_dataset, trainer_name, first_irreps):
    """The planner sizes for the E3nnUNet of the trainer's spec (found by name as nnUNetv2_train finds it),
    records that spec in the plans, and the trainer's own network fits the target on them."""
    from nnunet_equivariant.planning.plan_and_preprocess import trainer_spec
    from nnunet_equivariant.planning.planner import SIZING_KEY
    from nnunet_equivariant.training import e3nn as trainers

    trainer = getattr(trainers, trainer_name)
    spec = trainer_spec(trainer_name)
    assert spec == trainer.spec and trainer_spec("nnUNetTrainer") is None
    planner = functools.partial(nnUNetPlannerEquivariant, spec=spec, trainer_name=trainer_name)
    config = plan_experiment_dataset(ct_like_dataset, planner, gpu_memory_target_in_gb=8)[0]
    config = config["configurations"]["3d_fullres"]
    assert config[SIZING_KEY] == {"trainer": trainer_name, "spec": spec.to_dict()}
    networks = networks_on_plans(config, 1, 3, spec)
    built = trainer.build_network_architecture(None, ConfigurationManager(config), 1, 3, True)
    assert str(networks["E3nnUNet"].encoder.output_irreps[0]) == first_irreps
    assert [str(i) for i in built.encoder.output_irreps] == [str(i) for i in networks["E3nnUNet"].encoder.output_irreps]
    assert sum(p.numel() for p in built.parameters()) == sum(p.numel() for p in networks["E3nnUNet"].parameters()), \
        "the planner's network is the one the trainer trains"
    patch, batch = config["patch_size"], config["batch_size"]
    assert estimate_training_bytes(built, patch, batch) <= 8 * GiB, "the trainer's network fits the target"
    default = networks_on_plans(config, 1, 3)["E3nnUNet"]
    if trainer_name != "nnUNetTrainerE3nnAntialias":  # same irreps as the default network
        wider = trainer_name == "nnUNetTrainerE3nn_4x4x4"
        assert (estimate_training_bytes(built, patch, batch) > estimate_training_bytes(default, patch, batch)) == wider


def test_trainer_spec_rejects_unknown_trainers():
    from nnunet_equivariant.planning.plan_and_preprocess import trainer_spec

    with pytest.raises(ValueError, match="trainer 'nnUNetTrainerNoSuchThing' not found"):
        trainer_spec("nnUNetTrainerNoSuchThing")


def test_bad_planner_settings(ct_like_dataset):
    with pytest.raises(ValueError, match="isotropic"):
        nnUNetPlannerEquivariant(ct_like_dataset, overwrite_target_spacing=[1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="gpu_memory_target_in_gb"):
        nnUNetPlannerEquivariant(ct_like_dataset, gpu_memory_target_in_gb=0)
    with pytest.raises(ValueError, match="memory target of 0.001 GB"):
        _plan(ct_like_dataset, 0.001)


@pytest.mark.e2e
def test_plan_and_preprocess_command_resamples_and_networks_build(nnunet_workspace):
    ws = nnunet_workspace
    dataset = write_rods_and_discs_dataset(ws.raw, 903, num_train=3, num_test=0, shape=(28, 28, 14),
                                           spacing=(1.0, 1.0, 2.0))
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    ws.run("nnunet-equivariant", "plan_and_preprocess", "-d", 903, "-np", "1")
    pre = ws.preprocessed / dataset.name
    plans = json.loads((pre / f"{PLANS_IDENTIFIER}.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    spacing = 2.0 ** (1 / 3)
    assert config["spacing"] == pytest.approx([spacing] * 3)
    data, seg, _, properties = nnUNetDatasetBlosc2(str(pre / f"{PLANS_IDENTIFIER}_3d_fullres")).load_case(
        "RodsDiscs_000")
    assert properties["spacing"] == pytest.approx([2.0, 1.0, 1.0]), "original spacing (z, y, x)"
    expected_shape = np.round(np.array([14 * 2.0, 28, 28]) / spacing).astype(int)
    assert data.shape[1:] == seg.shape[1:] == tuple(expected_shape), "resampled to the isotropic spacing"

    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn

    manager = PlansManager(plans).get_configuration("3d_fullres")
    x = torch.randn(1, 1, *config["patch_size"])
    plain = get_network_from_plans(manager.network_arch_class_name, manager.network_arch_init_kwargs,
                                   manager.network_arch_init_kwargs_req_import, 1, 3, deep_supervision=False)
    steerable = nnUNetTrainerE3nn.build_network_architecture(None, manager, 1, 3, False)
    with torch.no_grad():
        for net in (plain, steerable):
            assert net.eval()(x).shape == (1, 3, *config["patch_size"]), f"{type(net).__name__} runs at the patch"


def test_resenc_presets_plan_residual_encoders_sized_for_the_steerable_network(ct_like_dataset, tmp_path):
    """nnU-Net's ResEnc M / L / XL on the isotropic grid: ResidualEncoderUNet plans (nnU-Net's blocks per stage,
    3^3 kernels) under the presets' memory targets, met by the E3nnResEncUNet the steerable trainer builds."""
    from nnunet_equivariant.planning.planner import RESENC_PRESETS, plans_identifier
    from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn

    voxels = {}
    for preset, target in RESENC_PRESETS.items():
        planner = functools.partial(nnUNetPlannerEquivariant, preset=preset)
        plans, identifier = plan_experiment_dataset(ct_like_dataset, planner)  # the preset's memory target
        assert identifier == plans_identifier(preset) == f"nnUNetPlansEquivariantResEnc{preset}"
        config = plans["configurations"]["3d_fullres"]
        assert config["data_identifier"] == f"{identifier}_3d_fullres"
        arch = config["architecture"]
        assert arch["network_class_name"].endswith("ResidualEncoderUNet")
        kwargs = arch["arch_kwargs"]
        n = kwargs["n_stages"]
        assert kwargs["n_blocks_per_stage"] == [1, 3, 4, 6, 6, 6][:n] and kwargs["n_conv_per_stage_decoder"] == [1] * (n - 1)
        assert kwargs["kernel_sizes"] == [[3, 3, 3]] * n and kwargs["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * (n - 1)
        networks = networks_on_plans(config, 1, 3)
        assert set(networks) == {"ResidualEncoderUNet", "E3nnResEncUNet"}
        built = nnUNetTrainerE3nn.build_network_architecture(None, ConfigurationManager(config), 1, 3, True)
        assert type(built).__name__ == "E3nnResEncUNet"
        assert sum(p.numel() for p in built.parameters()) == sum(
            p.numel() for p in networks["E3nnResEncUNet"].parameters()), "the network the trainer trains"
        patch, batch = config["patch_size"], config["batch_size"]
        assert estimate_training_bytes(built, patch, batch) <= target * GiB, "it fits the preset's target"
        assert max(estimate_training_bytes(net, patch, batch) for net in networks.values()) <= target * GiB
        voxels[preset] = np.prod(patch) * batch
    assert voxels["M"] < voxels["L"] < voxels["XL"], "more memory, more voxels per step"
