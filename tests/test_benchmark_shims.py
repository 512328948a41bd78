"""The benchmarks' trainer shims: a variant named ``Base[field=value,...]`` is the base trainer with those
fields of its ``E3nnSpec`` replaced and those trainer attributes set, under nnU-Net's constructor signature."""
import inspect
import sys

import pytest
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def runs():
    return load_benchmark("nnunet_runs")


def test_parse_variant(runs):
    assert runs.parse_variant("nnUNetTrainer") == ("nnUNetTrainer", {})
    assert runs.parse_variant("nnUNetTrainerE3nn[kernel_size=3, pooling=mean,consistency_weight=0.5]") == \
        ("nnUNetTrainerE3nn", {"kernel_size": 3, "pooling": "mean", "consistency_weight": 0.5})
    assert runs.variant_name("nnUNetTrainerE3nn[kernel_size=3,consistency_weight=0.5]") == \
        "nnUNetTrainerE3nn_kernel_size3_consistency_weight0p5"
    for bad in ("nnUNetTrainerE3nn[kernel_size]", "nnUNetTrainerE3nn[kernel_size=3", "a b"):
        with pytest.raises(ValueError, match="trainer"):
            runs.parse_variant(bad)


def test_budget_shim_of_a_variant_builds_that_network(runs, tmp_path, monkeypatch):
    from dataclasses import replace

    from nnunet_equivariant.training.offgrid_trainers import nnUNetTrainerE3nnConsistency

    name = runs.budget_trainer(tmp_path, "nnUNetTrainerE3nnConsistency[kernel_size=3,consistency_weight=0.5]",
                               60, 5, seed=1, clock="cpu")
    monkeypatch.syspath_prepend(str(tmp_path))
    shim = getattr(__import__(name), name)
    sys.modules.pop(name)
    assert issubclass(shim, nnUNetTrainerE3nnConsistency)
    assert shim.spec == replace(nnUNetTrainerE3nnConsistency.spec, kernel_size=3)
    assert "self.consistency_weight = 0.5" in (tmp_path / f"{name}.py").read_text(), "set after nnU-Net's __init__"
    assert shim.consistency_weight == 0.5, "and on the class, for classmethods"
    # nnU-Net records the constructor's arguments by name
    assert list(inspect.signature(shim.__init__).parameters) == \
        list(inspect.signature(nnUNetTrainerE3nnConsistency.__init__).parameters)


def test_variant_of_an_nnunet_trainer_sets_its_attributes_after_nnunets_init(runs, tmp_path, monkeypatch):
    """``initial_lr`` is set by nnU-Net's ``__init__``: the variant's value must come after it."""
    from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerVanillaAdam

    name = runs.schedule_trainer(tmp_path, "nnUNetTrainerVanillaAdam[initial_lr=0.005]", 2, 5)
    monkeypatch.syspath_prepend(str(tmp_path))
    shim = getattr(__import__(name), name)
    sys.modules.pop(name)
    assert shim.__mro__[1] is nnUNetTrainerVanillaAdam
    source = inspect.getsource(shim.__init__)
    assert source.index("super().__init__") < source.index("self.initial_lr = 0.005")
    with pytest.raises(ValueError, match="nnUNetTrainerNoSuchThing"):
        runs.schedule_trainer(tmp_path, "nnUNetTrainerNoSuchThing", 2, 5)


def test_variant_attribute_reaches_the_classmethods(runs, tmp_path, monkeypatch):
    """``rotation_probability`` is read by the classmethod ``get_training_transforms`` (nnU-Net calls it on the
    instance, so ``cls`` is the shim): an attribute set only on the instance would leave the augmentation at
    the base's 0.5 while the log printed the variant's value."""
    name = runs.schedule_trainer(tmp_path, "nnUNetTrainerE3nnCompact[rotation_probability=1.0]", 2, 5)
    monkeypatch.syspath_prepend(str(tmp_path))
    shim = getattr(__import__(name), name)
    sys.modules.pop(name)
    assert shim.rotation_probability == 1.0
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    pipeline = shim.get_training_transforms((24, 24, 24), (-0.5, 0.5), None, (0, 1, 2), False)
    assert [t.p_rotation for t in pipeline.transforms if isinstance(t, SpatialTransform)] == [1.0]


def test_goal_summary_counts_learned_structures_and_their_deviations(monkeypatch):
    """offgrid_training's one line per trainer, on hand-made goal rows: structures with Dice at 0 below 0.5
    are left out of the deviations and of the grid spread (median / max)."""
    from benchmark_scripts import BENCHMARKS

    monkeypatch.syspath_prepend(str(BENCHMARKS))  # offgrid_training imports nnunet_runs from its folder
    goal_summary = load_benchmark("offgrid_training").goal_summary

    def row(structure, axis, grid, deviation, dice0, spread, z):
        return {"trainer": "e3nn", "structure": structure, "axis": axis, "grid_mean": grid,
                "max_abs_deviation": deviation, "dice_0": dice0, "grid_spread": spread, "offgrid_z_rms": z}

    rows = [row("a", "z", 0.80, 0.01, 0.79, 0.01, 1.0), row("a", "x", 0.82, 0.05, 0.79, 0.03, 7.0),
            row("b", "z", 0.60, 0.03, 0.64, 0.04, 1.0), row("b", "x", 0.61, 0.02, 0.64, 0.03, float("nan")),
            row("c", "z", 0.10, 0.00, 0.10, 0.09, 9.0), row("c", "x", 0.10, 0.00, 0.10, 0.09, 9.0)]
    training = {("e3nn", 0): {"iterations": 30}, ("e3nn", 1): {"iterations": 20}}
    lines = goal_summary(rows, training)
    assert lines[2] == "| e3nn | 50 | 0.510 | 2 of 3 | 0.025 / 0.050 | 2 of 4 | 0.030 / 0.040 | 4.12 |"


def test_seed_summaries_give_each_trainer_and_seed_alone(monkeypatch):
    """With two seeds goal.md also summarises every seed alone, from the per-case Dice rows: a seed whose
    network dips at 45 degrees keeps its dip (averaging over seeds would halve it), trainers in their order."""
    from benchmark_scripts import BENCHMARKS

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = load_benchmark("offgrid_training")

    def rows(trainer, seed, dice_by_angle):
        return [{"trainer": trainer, "seed": seed, "case": "t0", "structure": "a", "axis": "z", "angle": angle,
                 "dice": dice} for angle, dice in dice_by_angle.items()]

    dice = (rows("e3nn", 0, {0: 0.8, 45: 0.7, 90: 0.8}) + rows("e3nn", 1, {0: 0.6, 45: 0.6, 90: 0.6})
            + rows("stock", 0, {0: 0.9, 45: 0.5, 90: 0.3}) + rows("stock", 1, {0: 0.4, 45: 0.2, 90: 0.1}))
    training = {("e3nn", 0): {"iterations": 30}, ("e3nn", 1): {"iterations": 20}, ("stock", 0): {"iterations": 5}}
    lines = bench.seed_summaries(dice, training)
    assert lines[2:] == ["| e3nn seed 0 | 30 | 0.800 | 1 of 1 | 0.100 / 0.100 | 0 of 1 | 0.000 / 0.000 | n/a |",
                         "| e3nn seed 1 | 20 | 0.600 | 1 of 1 | 0.000 / 0.000 | 1 of 1 | 0.000 / 0.000 | n/a |",
                         "| stock seed 0 | 5 | 0.900 | 1 of 1 | 0.300 / 0.300 | 0 of 1 | 0.300 / 0.300 | n/a |",
                         "| stock seed 1 | n/a | 0.400 | 0 of 1 | n/a | n/a | n/a | n/a |"]
    pooled = bench.goal_summary(bench.goal_rows(dice), training)
    assert pooled[2] == "| e3nn | 50 | 0.700 | 1 of 1 | 0.050 / 0.050 | 0 of 1 | 0.000 / 0.000 | n/a |"


def test_goal_on_an_anisotropic_grid_takes_half_turns_about_the_fine_axes(monkeypatch):
    """On 1 x 1 x 3 mm test images a quarter turn about x swaps a fine axis for the coarse one, so the goal's
    reference about x (and y) is the mean at 0 and 180 degrees, about z still at 0 and 90; a run without 180
    degrees is refused for x, not for z."""
    from benchmark_scripts import BENCHMARKS

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = load_benchmark("offgrid_training")
    assert bench.grid_angles("z", (1, 1, 3), (80, 80, 32)) == (0, 90)
    assert bench.grid_angles("x", (1, 1, 3)) == bench.grid_angles("y", (1, 1, 3)) == (0, 180)
    assert bench.grid_angles("z", (1, 1, 1), (80, 64, 80)) == (0, 180)  # a quarter turn leaves the box
    assert bench.grid_angles("x", (3, 3, 3), (32, 32, 32)) == bench.grid_angles("x") == (0, 90)

    def rows(axis, dice_by_angle):
        return [{"trainer": "e3nn", "seed": 0, "case": "t0", "structure": "a", "axis": axis, "angle": angle,
                 "dice": dice} for angle, dice in dice_by_angle.items()]

    dice = rows("x", {0: 0.8, 45: 0.75, 90: 0.6, 180: 0.8}) + rows("z", {0: 0.8, 45: 0.79, 90: 0.8})
    goal = {r["axis"]: r for r in bench.goal_rows(dice, spacing=(1, 1, 3), shape=(80, 80, 32))}
    assert goal["x"]["grid_mean"] == 0.8 and goal["x"]["at_angle"] == 90 and goal["x"]["max_abs_deviation"] == 0.2
    assert goal["z"]["grid_mean"] == 0.8 and goal["z"]["within_goal"] is True
    isotropic = {r["axis"]: r for r in bench.goal_rows(dice)}
    assert isotropic["x"]["grid_mean"] == 0.7333  # (0.8 + 0.6 + 0.8) / 3: the cubic grid's quarter turns
    with pytest.raises(ValueError, match=r"\(0, 180\) about x"):
        bench.goal_rows(rows("x", {0: 0.8, 90: 0.6}), spacing=(1, 1, 3))


def test_every_grid_angle_tested_joins_the_reference_and_measures_the_noise(monkeypatch, tmp_path):
    """With 180 and 270 degrees tested on a cubic grid, the reference is the mean of all four grid angles,
    the deviation is taken over 0-90 only, and ``grid_spread`` (the benchmark's noise for a grid-exact
    network) is the largest distance of a grid angle from the reference; goal.md names the angles used."""
    from benchmark_scripts import BENCHMARKS

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = load_benchmark("offgrid_training")
    dice = [{"trainer": "e3nn", "seed": 0, "case": "t0", "structure": "a", "axis": "z", "angle": angle,
             "dice": value} for angle, value in {0: 0.80, 45: 0.70, 90: 0.76, 180: 0.84, 270: 0.80}.items()]
    (row,) = bench.goal_rows(dice)
    assert row["grid_mean"] == 0.8 and row["grid_spread"] == 0.04
    assert row["max_abs_deviation"] == 0.1 and row["at_angle"] == 45, "180 and 270 are reference, not deviation"
    bench.goal_table(dice, tmp_path, {})
    assert "about z: 0, 90, 180, 270" in (tmp_path / "goal.md").read_text()
    assert bench.goal_rows(dice[:3])[0]["grid_spread"] == 0.02, "0 and 90 alone: |Dice 0 - Dice 90| / 2"


def test_offgrid_z_weighs_each_deviation_against_the_test_subjects_noise(monkeypatch):
    """``offgrid_z_rms``: the off-grid deviation over its standard error across test subjects (each subject
    against its own grid mean, seeds averaged per subject): a drop every subject shares is far outside the
    noise, deviations that cancel over the subjects are inside it."""
    from benchmark_scripts import BENCHMARKS

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = load_benchmark("offgrid_training")
    deviation = {"shared": [-0.05, -0.06, -0.04, -0.05], "cancelling": [0.01, -0.01, 0.01, -0.01]}
    dice = [{"trainer": "e3nn", "seed": seed, "subject": i, "structure": s, "axis": "z", "angle": angle,
             "dice": 0.8 + (d[i] if angle == 45 else 0.0)}
            for s, d in deviation.items() for seed in (0, 1) for i in range(4) for angle in (0, 45, 90)]
    goal = {r["structure"]: r for r in bench.goal_rows(dice)}
    assert goal["shared"]["offgrid_z_rms"] == 12.25  # 0.05 / (0.00816 / sqrt(4))
    assert goal["cancelling"]["offgrid_z_rms"] == 0.0 and goal["cancelling"]["max_abs_deviation"] == 0.0


def test_structure_learning_times_each_structure_from_the_per_label_pseudo_dice(monkeypatch, tmp_path):
    """When each structure switched on (never 0 again) and was learned (per-label EMA >= 0.5), in the
    epochs' cumulative seconds; an epoch without the label (NaN) neither resets nor feeds the EMA, labels in
    dataset.json's value order (not its key order)."""
    from benchmark_scripts import BENCHMARKS

    from nnunet_equivariant.evaluation.compare import TrainerEntry
    from nnunet_equivariant.evaluation.cost import TrainingTimes

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = load_benchmark("offgrid_training")
    # columns in label value order: "b" (1) learned in the first epoch, at 0 once; "a" (2) at 0 twice, then 1.0
    per_label = ((0.9, 0.0), (0.0, float("nan")), (0.8, 0.0), (0.9, 1.0), (0.9, 1.0))
    times = TrainingTimes(5, 10.0, 50.0, "test", (10.0, 20.0, 30.0, 40.0, 50.0), (), (), per_label)
    entry = TrainerEntry("m", "nnUNetPlans", tmp_path, name="m seed 0", times={0: times})
    rows = bench.structure_learning([entry], {"background": 0, "a": 2, "b": 1}, tmp_path)
    b, a = rows
    assert (b["structure"], b["on_s"], b["learned_s"], b["zero_epochs"]) == ("b", 30.0, 10.0, 1)
    # a: EMA 0, 0 (NaN kept), 0, 0.1, 0.19: switched on at epoch 4, never learned
    assert (a["structure"], a["on_s"], a["zero_epochs"]) == ("a", 40.0, 2) and a["learned_s"] != a["learned_s"]
    table = (tmp_path / "structure_learning.md").read_text().splitlines()
    assert table[-1] == "| m seed 0 | 10 | - | 1 of 2 | 3 of 10 |"
    assert (tmp_path / "structure_learning.csv").read_text().splitlines()[0] == \
        "model,structure,on_s,learned_s,zero_epochs,epochs"


def test_tiling_benchmark_counts_the_extra_tiles_of_symmetric_tiling(capsys):
    bench = load_benchmark("bench_tiling")
    assert bench.tiles_per_axis(31, 32, 0.5) == (1, 2) and bench.tiles_per_axis(30, 32, 0.5) == (1, 1)
    assert bench.tiles_per_axis(49, 32, 0.5) == (3, 4) and bench.tiles_per_axis(75, 32, 0.5) == (4, 4)
    small, large = bench.rows([32], 0.5)
    assert small["per_axis_ratio"] == 1.5 and small["cubic_max_ratio"] == 8
    assert 1 < large["per_axis_ratio"] < 1.1 and 0 < large["sizes_with_more"] < 0.5
    assert bench.main(["--patches", "16"]) == 0 and "| 16 | [16, 64] |" in capsys.readouterr().out


def test_volume_table_compares_predicted_and_true_voxels_on_and_off_the_grid(monkeypatch, tmp_path):
    """Summed over subjects, axes and seeds: a structure predicted 10 % smaller at 45 degrees only is 1.0 at
    the grid poses (0, 90, 180 about z) and 0.9 off them; on a 1 x 1 x 3 grid a quarter turn about x is off
    the grid (only half turns keep it)."""
    from benchmark_scripts import BENCHMARKS

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = load_benchmark("offgrid_training")
    rows = [{"trainer": "e3nn", "seed": seed, "structure": "a", "axis": axis, "angle": angle, "dice": 0.8,
             "true_voxels": 100, "predicted_voxels": 90 if angle == 45 else 100}
            for seed in (0, 1) for axis in ("z", "x") for angle in (0, 45, 90, 180)]
    (row,) = bench.volume_table(rows, tmp_path)
    assert (row["grid"], row["off_grid"]) == (1.0, 0.9)
    assert "| e3nn | a | 1.000 | 0.900 |" in (tmp_path / "volumes.md").read_text()
    (anisotropic,) = bench.volume_table(rows, spacing=(1, 1, 3))
    # off the grid: 45 about z (2 seeds x 90 of 100), 45 and 90 about x (2 x (90 + 100) of 200)
    assert anisotropic["off_grid"] == round((2 * 90 + 2 * 190) / 600, 3), "about x only half turns are grid"


def test_augmentation_labels_rotate_in_the_renderings_sense_and_compare_per_structure(monkeypatch, tmp_path):
    """benchmarks/offgrid_augmentation_labels.py: nnU-Net's SpatialTransform at 90 degrees is the exact quarter
    turn ``out(p) = labels(R^T p)`` about each axis (np.rot90 in the right-handed sense) in both label modes;
    a centred ball, the same in every pose, comes back nearly whole at 30 degrees."""
    import json

    import nibabel as nib
    import numpy as np
    from benchmark_scripts import BENCHMARKS

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = load_benchmark("offgrid_augmentation_labels")
    labels = np.random.default_rng(0).integers(0, 4, (12, 12, 12)).astype(np.uint8)
    for axis, plane in (("x", (1, 2)), ("y", (2, 0)), ("z", (0, 1))):
        for mode in ("bilinear", "nearest"):
            rotated = bench.augmented_labels(labels, axis, 90, mode)
            assert np.array_equal(rotated, np.rot90(labels, 1, plane)), (axis, mode)

    grid = np.stack(np.meshgrid(*[np.arange(16) - 7.5] * 3, indexing="ij"), -1)
    ball = (np.linalg.norm(grid, axis=-1) <= 5).astype(np.uint8)
    (tmp_path / "test_set" / "labels").mkdir(parents=True)
    for name in ("case_000z000", "case_000z030"):
        nib.save(nib.Nifti1Image(ball, np.eye(4)), str(tmp_path / "test_set" / "labels" / f"{name}.nii.gz"))
    (tmp_path / "nnUNet_raw" / "Dataset1_Ball").mkdir(parents=True)
    (tmp_path / "nnUNet_raw" / "Dataset1_Ball" / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "ball": 1}}))
    rows = bench.compare(tmp_path, 1, [30], ["z"])
    assert [(r["mode_seg"], r["structure"]) for r in rows] == [("bilinear", "ball"), ("nearest", "ball")]
    for r in rows:
        assert r["rendered"] == r["voxels_0"] and r["dice"] > 0.9 and abs(r["augmented"] / r["voxels_0"] - 1) < 0.05
    (tmp_path / "test_set" / "labels" / "case_000z000.nii.gz").unlink()
    with pytest.raises(ValueError, match="no 0-degree test label maps"):
        bench.compare(tmp_path, 1, [30], ["z"])


def test_augmented_images_turn_as_the_labels_and_the_cubic_spline_keeps_more_noise(monkeypatch):
    """Both interpolations of offgrid_augmentation_labels are the exact quarter turn of the labels' sense at
    90 degrees; at 45 degrees trilinear (nnU-Net's) averages white noise down more than a cubic B-spline,
    both agree on smooth content, and a third interpolation is refused."""
    import numpy as np
    from benchmark_scripts import BENCHMARKS
    from scipy.ndimage import gaussian_filter

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = load_benchmark("offgrid_augmentation_labels")
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(24, 24, 24))
    for axis, plane in (("x", (1, 2)), ("y", (2, 0)), ("z", (0, 1))):
        for interpolation in ("trilinear", "cubic"):
            rotated = bench.augmented_image(noise, axis, 90, interpolation)
            np.testing.assert_allclose(rotated, np.rot90(noise, 1, plane), atol=1e-5, err_msg=f"{axis} {interpolation}")
    inner = (slice(6, -6),) * 3
    kept = {i: bench.augmented_image(noise, "z", 45, i)[inner].std() / noise[inner].std()
            for i in ("trilinear", "cubic")}
    assert 0.55 < kept["trilinear"] < 0.75 < kept["cubic"] < 0.95, kept
    smooth = gaussian_filter(noise, 3)
    trilinear, cubic = (bench.augmented_image(smooth, "z", 45, i)[inner] for i in ("trilinear", "cubic"))
    assert np.abs(trilinear - cubic).max() < 0.05 * np.abs(smooth).max()
    with pytest.raises(ValueError, match="'quintic'"):
        bench.augmented_image(noise, "z", 45, "quintic")


def test_training_poses_render_each_subject_off_the_grid_split_by_subject_and_share_the_test_set(monkeypatch,
                                                                                                 tmp_path):
    """``--train-poses K``: each training subject in its canonical pose K times and rendered (not
    interpolated) in K poses within 45 degrees about one axis; nnU-Net's 5-fold split of the subjects (the
    split of the training set without poses) with every case of a subject on the same side; the test set of
    the same subjects is shared, not rendered again."""
    import json

    import numpy as np
    from benchmark_scripts import BENCHMARKS
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = load_benchmark("offgrid_training")
    anatomy, shape, spacing = bench.synthetic_anatomy(), (16, 16, 16), (2.0, 2.0, 2.0)
    plain, test = bench.write_dataset(tmp_path / "nnUNet_raw", 990, 5, 1, shape, spacing, ["z"], [0, 45], 0, anatomy)
    done = (test / "done").stat().st_mtime_ns
    posed, shared = bench.write_dataset(tmp_path / "nnUNet_raw", 991, 5, 1, shape, spacing, ["z"], [0, 45], 0,
                                        anatomy, train_poses=2)
    assert shared == test and (test / "done").stat().st_mtime_ns == done, "the test set is rendered once"
    assert json.loads((posed / "dataset.json").read_text())["numTraining"] == 5 * 4
    name, read = anatomy.name, bench._read_nifti
    subjects = anatomy.subjects(5, 1, 0)
    for i in (0, 3):
        canonical = read(plain / "labelsTr" / f"{name}_{i:03d}.nii.gz")
        assert np.array_equal(read(posed / "labelsTr" / f"{name}_{i:03d}.nii.gz"), canonical)
        assert np.array_equal(read(posed / "labelsTr" / f"{name}_{i:03d}same1.nii.gz"), canonical)
        for j, (axis, angle) in enumerate(bench.training_poses(i, 2, 0)):
            assert axis in "xyz" and abs(angle) <= 45
            label = read(posed / "labelsTr" / f"{name}_{i:03d}pose{j}.nii.gz")
            _, expected = anatomy.render(subjects[i], shape, spacing, bench._rotation(axis, angle))
            assert np.array_equal(label, expected) and not np.array_equal(label, canonical)
    assert bench.training_poses(0, 2, 0) != bench.training_poses(1, 2, 0)
    fewer, _ = bench.write_dataset(tmp_path / "nnUNet_raw", 992, 5, 1, shape, spacing, ["z"], [0, 45], 0, anatomy,
                                   train_poses=2, train_canonical=1)  # one canonical case of three per subject
    assert sorted(f.name for f in (fewer / "labelsTr").glob(f"{name}_003*")) == \
        [f"{name}_003.nii.gz", f"{name}_003pose0.nii.gz", f"{name}_003pose1.nii.gz"]
    with pytest.raises(ValueError, match="at least 1 case in its canonical pose"):
        bench._training_cases(name, 0, 2, 0, canonical=0)

    cases = [f.name[:-len(".nii.gz")] for f in (posed / "labelsTr").glob("*.nii.gz")]
    splits = bench.subject_splits(cases, name)
    nnunet = generate_crossval_split(sorted(f"{name}_{i:03d}" for i in range(5)), seed=12345, n_splits=5)
    for fold, reference in zip(splits, nnunet):
        assert fold["val"] == list(reference["val"]), "validation: the canonical cases of nnU-Net's subjects"
        assert sorted(fold["train"]) == sorted(c for c in cases if c[:len(name) + 4] in reference["train"])
    json.dumps(splits)  # nnU-Net reads it as splits_final.json
    # nnU-Net's planner caps the batch at 5 % of the dataset's voxels: counted per subject, not per pose
    plans = {"configurations": {"3d_fullres": {"batch_size": 13, "patch_size": [32, 32, 32]},
                                "2d": {"batch_size": 300, "patch_size": [32, 32]}, "3d_cascade": {"inherits_from": "x"}}}
    capped = bench.subject_batch_size(plans, 16, (32, 32, 32))["configurations"]
    assert (capped["3d_fullres"]["batch_size"], capped["2d"]["batch_size"]) == (2, 26)
    many = {"configurations": {"3d_fullres": {"batch_size": 13, "patch_size": [32, 32, 32]}}}
    assert bench.subject_batch_size(many, 400, (32, 32, 32))["configurations"]["3d_fullres"]["batch_size"] == 13


def test_partial_volume_truth_is_written_for_every_test_case_and_deviations_are_from_the_grid_mean(monkeypatch,
                                                                                                  tmp_path):
    """benchmarks/offgrid_label_truth.py: the partial-volume label maps of a test folder, one per case,
    named as the centre labels, agreeing with them but not everywhere, a quarter turn of each other at the
    grid poses, kept when present; ``deviations`` is the mean over axes of each structure's Dice minus its
    mean at the grid angles about that axis (multiples of 90 degrees)."""
    import numpy as np
    from benchmark_scripts import BENCHMARKS

    from nnunet_equivariant.synthetic_anatomy import LABELS, subject_labels

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = load_benchmark("offgrid_label_truth")
    training = load_benchmark("offgrid_training")
    anatomy, shape, spacing = training.synthetic_anatomy(), (16, 16, 16), (2.0, 2.0, 2.0)
    _, test = training.write_dataset(tmp_path / "nnUNet_raw", 990, 2, 2, shape, spacing, ["z"], [0, 30, 90], 0, anatomy)
    truth = bench.write_partial_volume_truth(test, anatomy.name, anatomy.subjects(2, 2, 0), subject_labels,
                                             len(LABELS), spacing, shape)
    names = sorted(f.name for f in (test / "labels").glob("*.nii.gz"))
    assert sorted(f.name for f in (truth / "labels").glob("*.nii.gz")) == names and len(names) == 6
    read = training._read_nifti
    for subject in (2, 3):
        pv, pv_90 = (read(truth / "labels" / f"{anatomy.name}_{subject:03d}z{a:03d}.nii.gz") for a in (0, 90))
        centre = read(test / "labels" / f"{anatomy.name}_{subject:03d}z000.nii.gz")
        assert np.array_equal(np.rot90(pv, 1, axes=(0, 1)), pv_90)
        assert 0.8 < (pv == centre).mean() < 1
    first = truth / "labels" / names[0]
    written = first.stat().st_mtime_ns
    bench.write_partial_volume_truth(test, anatomy.name, anatomy.subjects(2, 2, 0), subject_labels, len(LABELS),
                                     spacing, shape)
    assert first.stat().st_mtime_ns == written, "cases already written are kept"

    rows = [{"structure": "a", "axis": axis, "angle": angle, "dice": dice}
            for axis, angle, dice in [("z", 0, 0.8), ("z", 90, 0.7), ("z", 30, 0.6), ("x", 90, 0.9), ("x", 30, 0.85),
                                      ("y", 90, 0.8), ("y", 30, float("nan")), ("z", 180, 0.75)]]
    # grid means: z 0.75 (0, 90, 180), x 0.85, y 0.8; at 30: z -0.15, x 0.0, y absent
    np.testing.assert_allclose(bench.deviations(rows)["a"][30], -0.075)
    np.testing.assert_allclose(bench.deviations(rows)["a"][0], (0.05 - 0.05 + 0.0) / 3)


def test_results_of_other_trainers_on_the_same_test_set_get_their_own_folder(monkeypatch, tmp_path):
    """offgrid_training.py's tables: a rerun of the same trainers writes where it wrote before; other
    trainers on the same test set and seeds get a folder of their own, so nothing earlier is overwritten."""
    from benchmark_scripts import BENCHMARKS

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = load_benchmark("offgrid_training")
    first = bench.results_folder(tmp_path / "budget900s_test_seeds0-1", ["B", "A"])
    (first / "goal.csv").write_text("a")
    assert bench.results_folder(tmp_path / "budget900s_test_seeds0-1", ["A", "B"]) == first
    other = bench.results_folder(tmp_path / "budget900s_test_seeds0-1", ["C"])
    assert other != first and other.name.startswith("budget900s_test_seeds0-1_") and other.is_dir()
    assert (first / "goal.csv").read_text() == "a"
    assert bench.results_folder(tmp_path / "budget900s_test_seeds0-1", ["C"]) == other
    legacy = tmp_path / "old"  # written before trainers.json was kept: never reused
    legacy.mkdir()
    (legacy / "goal.csv").write_text("b")
    assert bench.results_folder(legacy, ["A"]) != legacy
