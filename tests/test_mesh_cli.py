"""``nnunet-equivariant mesh ...`` in-process: stand-ins -> patch set -> the Table III training loop."""
import csv

import numpy as np
import pytest

from nnunet_equivariant.cli import main
from nnunet_equivariant.meshes.intra import read_ad
from nnunet_equivariant.meshes.mesh_io import read_labelled_mesh


@pytest.fixture(scope="module")
def patch_set(tmp_path_factory):
    base = tmp_path_factory.mktemp("mesh_cli")
    assert main(["mesh", "standins", "intra", str(base / "IntrA"), "--num-cases", "3"]) == 0
    assert main(["mesh", "to_patches", "intra", str(base / "IntrA"), "-o", str(base / "patches"),
                 "--side", "3.0"]) == 0
    return base


def test_standins_and_existing_outputs(patch_set, capsys):
    assert sorted(p.name for p in (patch_set / "IntrA" / "annotated" / "ad").iterdir()) == \
        ["AN1-_norm.ad", "AN2-_norm.ad", "AN3-_norm.ad"]
    assert len(list((patch_set / "IntrA" / "fileSplit" / "seg").glob("annSplit_*.txt"))) == 5
    capsys.readouterr()
    assert main(["mesh", "to_patches", "intra", str(patch_set / "IntrA"), "-o", str(patch_set / "patches"),
                 "--side", "3.0"]) == 2
    assert "patches exists; pass --overwrite" in capsys.readouterr().err


def test_train_patches_writes_table_iii_and_plot(patch_set):
    out = patch_set / "study"
    assert main(["mesh", "train_patches", str(patch_set / "patches"), "-o", str(out), "--archs", "K16S16",
                 "--symmetries", "baseline", "f123", "--ratios", "30:70", "70:30", "--epochs", "1",
                 "--samples-per-epoch", "128", "--batch-size", "64", "--device", "cpu", "--write-meshes"]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    # 2 ratios x (baseline, shared by both tasks, + f123 per task) x 2 tasks = 8 rows
    assert len(rows) == 8
    assert {(r["symmetry"], r["task"], r["ratio"]) for r in rows} == {
        (s, t, r) for s in ("baseline", "f123") for t in ("keep_architecture", "keep_parameters")
        for r in ("30:70", "70:30")}
    params = {(r["symmetry"], r["task"]): int(r["parameters"]) for r in rows}
    assert params == {("baseline", "keep_architecture"): 707_362, ("baseline", "keep_parameters"): 707_362,
                      ("f123", "keep_architecture"): 133_922, ("f123", "keep_parameters"): 707_318}, "Table II"
    baseline = [r for r in rows if r["symmetry"] == "baseline" and r["ratio"] == "30:70"]
    assert baseline[0]["accuracy"] == baseline[1]["accuracy"], "one baseline run serves both tasks"
    table = list(csv.DictReader((out / "table.csv").open()))
    assert [(t["ratio"], t["task"], t["model"]) for t in table] == [
        (r, t, "K16S16") for r in ("30:70", "70:30") for t in ("keep_architecture", "keep_parameters")]
    assert "(" in table[0]["f123"], "symmetric models show their difference to the baseline"
    assert (out / "accuracy.png").stat().st_size > 10_000
    run = out / "meshes" / "K16S16_f123_keep_parameters_70-30_seed0"
    (test_case,) = [p.stem for p in run.glob("*.vtu")]
    _, _, data = read_labelled_mesh(run / f"{test_case}.ply")
    _, _, ad_labels = read_ad(patch_set / "IntrA" / "annotated" / "ad" / f"{test_case}-_norm.ad")
    np.testing.assert_array_equal(data["true_label"], np.where(ad_labels == 2, 1, ad_labels))
    f123 = next(r for r in rows if (r["symmetry"], r["task"], r["ratio"]) == ("f123", "keep_parameters", "70:30"))
    assert np.mean(data["label"] == data["true_label"]) == pytest.approx(float(f123["accuracy"])), \
        "the written labels are the scored predictions"


def test_train_patches_rejects_unknown_settings_before_training(patch_set, capsys):
    capsys.readouterr()
    assert main(["mesh", "train_patches", str(patch_set / "patches"), "-o", str(patch_set / "bad"),
                 "--archs", "K3S3"]) == 2
    assert "unknown arch ['K3S3']" in capsys.readouterr().err
    assert main(["mesh", "train_patches", str(patch_set / "patches"), "-o", str(patch_set / "bad"),
                 "--ratios", "15:85"]) == 2
    assert "no split 15:85" in capsys.readouterr().err
    assert not (patch_set / "bad").exists()
