"""Dataset writers: nnU-Net raw datasets and patch sets from stand-ins; bad cases skipped, outputs atomic."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_equivariant.meshes.labelled_mesh import LabelledMesh
from nnunet_equivariant.meshes.nnunet_dataset import write_nnunet_dataset
from nnunet_equivariant.meshes.patch_dataset import PatchDataset, ratio_splits, read_patch_meta, write_patch_dataset
from nnunet_equivariant.meshes.sdf import patch_points, signed_distance
from nnunet_equivariant.meshes.sources import acdc_source, grouped_folds, intra_source
from nnunet_equivariant.meshes.standins import write_acdc_standin, write_intra_standin


@pytest.fixture(scope="module")
def intra_root(tmp_path_factory):
    root = write_intra_standin(tmp_path_factory.mktemp("intra") / "IntrA", num_cases=6)
    # AN6 is broken: its .obj lost a vertex, so it disagrees with its .ad
    obj = root / "annotated" / "obj" / "AN6_full.obj"
    lines = obj.read_text().splitlines()
    first_v = next(i for i, line in enumerate(lines) if line.startswith("v "))
    obj.write_text("\n".join(lines[:first_v] + lines[first_v + 1:]) + "\n")
    return root


@pytest.fixture(scope="module")
def intra_nnunet(intra_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("nnunet")
    report = write_nnunet_dataset(intra_source(intra_root), base / "raw", 961, grid_size=32,
                                  preprocessed_root=base / "preprocessed")
    return base, report


def test_nnunet_dataset_layout_and_official_folds(intra_nnunet):
    base, report = intra_nnunet
    folder = base / "raw" / "Dataset961_IntrA"
    assert report.written == ["AN1", "AN2", "AN3", "AN4", "AN5"]
    assert list(report.skipped) == ["AN6"] and "AN6_full.obj" in report.skipped["AN6"], \
        "the broken case is skipped with an error naming its file"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [f"AN{k}_0000.nii.gz" for k in range(1, 6)]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [f"AN{k}.nii.gz" for k in range(1, 6)]
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "vessel": 1, "aneurysm": 2}
    assert dataset["channel_names"] == {"0": "noNorm"} and dataset["numTraining"] == 5
    assert dataset["mesh_conversion"]["skipped"].keys() == {"AN6"}
    splits = json.loads((base / "preprocessed" / "Dataset961_IntrA" / "splits_final.json").read_text())
    assert splits == json.loads((folder / "splits_final.json").read_text())
    assert [s["val"] for s in splits] == [["AN1"], ["AN2"], ["AN3"], ["AN4"], ["AN5"]], "IntrA's annSplit folds"
    assert splits[0]["train"] == ["AN2", "AN3", "AN4", "AN5"]
    assert any("AN6" in note for note in report.notes), "the skipped case is reported as left out of the folds"
    assert not list(base.glob("raw/.*")), "no temporary folder is left behind"


def test_nnunet_image_is_the_sdf_and_the_band_carries_vertex_classes(intra_nnunet):
    base, _ = intra_nnunet
    folder = base / "raw" / "Dataset961_IntrA"
    mesh = LabelledMesh.load(folder / "meshesTr" / "AN2.npz")
    image = sitk.ReadImage(str(folder / "imagesTr" / "AN2_0000.nii.gz"))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "AN2.nii.gz"))).transpose(2, 1, 0)
    sdf = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    spacing, origin = image.GetSpacing()[0], np.array(image.GetOrigin())
    nodes = np.array([[3, 5, 7], [10, 12, 9], [20, 4, 15]])
    np.testing.assert_allclose(sdf[tuple(nodes.T)], signed_distance(origin + spacing * nodes, mesh.vertices,
                                                                    mesh.faces), rtol=1e-5, atol=1e-5)
    band = labels > 0
    assert np.all(np.abs(sdf[band]) <= 1.5 * spacing + 1e-6), "labels only in the surface band"
    nearest_node = np.rint((mesh.labelled_vertices - origin) / spacing).astype(int)
    at_vertices = labels[tuple(nearest_node.T)]
    labelled = at_vertices > 0
    assert labelled.mean() > 0.95
    assert np.mean(at_vertices[labelled] - 1 == mesh.labels[labelled]) > 0.9, "band classes follow the vertices"


def test_existing_outputs_are_not_overwritten_unless_asked(intra_root, intra_nnunet, tmp_path):
    base, _ = intra_nnunet
    with pytest.raises(FileExistsError, match="Dataset961_IntrA exists"):
        write_nnunet_dataset(intra_source(intra_root), base / "raw", 961, grid_size=32)
    with pytest.raises(FileExistsError, match="dataset id 961 is already used by Dataset961_IntrA"):
        write_nnunet_dataset(intra_source(intra_root), base / "raw", 961, dataset_name="Other", grid_size=32)
    with pytest.raises(FileExistsError, match="splits_final.json exists"):
        write_nnunet_dataset(intra_source(intra_root), tmp_path / "raw", 961, grid_size=32,
                             preprocessed_root=base / "preprocessed")


def test_acdc_dataset_keeps_patients_together_and_holds_out_testing(tmp_path):
    root = write_acdc_standin(tmp_path / "ACDC", num_patients=3)
    (root / "testing").mkdir()
    shutil.move(root / "training" / "patient003", root / "testing" / "patient003")
    report = write_nnunet_dataset(acdc_source(root), tmp_path / "raw", 962, spacing=6.0, num_folds=2)
    folder = tmp_path / "raw" / "Dataset962_ACDCS"
    assert sorted(report.written) == ["patient001_ED", "patient001_ES", "patient002_ED", "patient002_ES",
                                      "patient003_ED", "patient003_ES"]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["patient003_ED_0000.nii.gz",
                                                                       "patient003_ES_0000.nii.gz"]
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "epicardium": 1, "lv_endocardium": 2, "rv_endocardium": 3}
    assert dataset["numTraining"] == 4
    splits = json.loads((folder / "splits_final.json").read_text())
    assert sorted(map(sorted, (s["val"] for s in splits))) == [["patient001_ED", "patient001_ES"],
                                                               ["patient002_ED", "patient002_ES"]]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "patient001_ED.nii.gz")))
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert any("splits_final.json" in note and "nnUNet_preprocessed" in note for note in report.notes), \
        "without a preprocessed folder the report says where splits_final.json must go"


def test_grouped_folds_and_ratio_splits():
    names = [f"p{i}_{ph}" for i in range(10) for ph in ("ED", "ES")]
    groups = [n.split("_")[0] for n in names]
    folds = grouped_folds(names, groups, 5, seed=1)
    assert sorted(n for f in folds for n in f) == sorted(names)
    for fold in folds:
        patients = {n.split("_")[0] for n in fold}
        assert len(patients) == 2 and sorted(fold) == sorted(f"{p}_{ph}" for p in patients for ph in ("ED", "ES")), \
            "each fold holds both frames of its two patients"
    splits = ratio_splits(names, groups, seeds=(0, 1))
    assert [s["ratio"] for s in splits[:9]] == ["10:90", "20:80", "30:70", "40:60", "50:50", "60:40", "70:30",
                                                "80:20", "90:10"]
    for s in splits:
        assert len(s["train"]) == 2 * round(s["fraction"] * 10), "splits count patients, both frames go together"
        assert not {n.split("_")[0] for n in s["train"]} & {n.split("_")[0] for n in s["test"]}
    assert splits[1]["train"] != splits[10]["train"], "seeds give different splits"
    assert ratio_splits(names, groups, seeds=(0,)) == splits[:9], "splits are reproducible"


def test_patch_dataset_serves_exact_patches_of_every_vertex(intra_root, tmp_path):
    side = 3.0
    source = intra_source(intra_root)
    source = dataclasses.replace(source, cases=[c for c in source.cases if c.name in ("AN1", "AN3", "AN6")])
    report = write_patch_dataset(source, tmp_path / "patches", side=side, seeds=(0, 1))
    assert list(report.skipped) == ["AN6"]
    meta = read_patch_meta(tmp_path / "patches")
    assert meta["n"] == 16 and meta["grid_spacing"] == pytest.approx(side / 15)
    assert len(meta["splits"]) == 18, "nine ratios for each of two seeds"
    assert all(len(sp["train"]) == 1 and len(sp["test"]) == 1 for sp in meta["splits"]), \
        "with two meshes every ratio keeps one mesh on each side"
    dataset = PatchDataset(tmp_path / "patches", ["AN1", "AN3"])
    assert len(dataset) == sum(m.num_labelled for m in dataset.meshes)
    idx = np.array([0, 5, len(dataset) - 1, 17])
    patches, labels = dataset.batch(idx)
    assert patches.shape == (4, 1, 16, 16, 16) and labels.tolist() == dataset.labels[idx].tolist()
    single, label = dataset[17]
    np.testing.assert_array_equal(single.numpy(), patches[3].numpy())
    assert label == labels[3]
    mesh = dataset.meshes[1]
    centre = mesh.vertices[dataset.vertex_index[len(dataset) - 1]]
    exact = signed_distance(patch_points(centre, side).reshape(-1, 3), mesh.vertices, mesh.faces)
    err = np.abs(patches[2, 0].numpy().ravel() - exact)
    assert err.mean() < 0.002 * side
    batches = list(dataset.batches(1000, shuffle=True, seed=3))
    assert sum(len(b[1]) for b in batches) == len(dataset)
    assert sorted(np.concatenate([b[1].numpy() for b in batches]).tolist()) == sorted(dataset.labels.tolist())
    with pytest.raises(ValueError, match=r"cases \['AN9'\] are not in the patch set"):
        PatchDataset(tmp_path / "patches", ["AN9"])


def test_a_four_patient_acdc_set_gives_four_folds_with_a_warning(tmp_path, capsys):
    """ACDC with fewer patients than nnU-Net's five folds: never an abort after reading; the message says what."""
    from nnunet_equivariant.cli import main

    root = write_acdc_standin(tmp_path / "ACDC", num_patients=4)
    raw = tmp_path / "raw"
    capsys.readouterr()
    assert main(["mesh", "to_nnunet", "acdc", str(root), "-d", "965", "--raw", str(raw), "--preprocessed",
                 str(tmp_path / "pre"), "--spacing", "6", "--folds", "5"]) == 2
    assert "5 folds requested, but ACDCS has 4 training patients: choose --folds between 1 and 4" in \
        capsys.readouterr().err
    assert not raw.exists(), "a bad --folds is refused before anything is read or written"

    with pytest.warns(UserWarning, match="4 patients cannot fill 5 folds: wrote 4 folds"):
        assert main(["mesh", "to_nnunet", "acdc", str(root), "-d", "965", "--raw", str(raw), "--preprocessed",
                     str(tmp_path / "pre"), "--spacing", "6"]) == 0
    assert "4 patients cannot fill 5 folds: wrote 4 folds (the default 5" in capsys.readouterr().out
    splits = json.loads((tmp_path / "pre" / "Dataset965_ACDCS" / "splits_final.json").read_text())
    assert sorted(tuple(s["val"]) for s in splits) == [(f"patient00{k}_ED", f"patient00{k}_ES") for k in range(1, 5)]
    for s in splits:
        assert sorted(s["train"] + s["val"]) == sorted(f"patient00{k}_{p}" for k in range(1, 5) for p in ("ED", "ES"))

    assert main(["mesh", "to_nnunet", "acdc", str(root), "-d", "965", "--raw", str(raw), "--preprocessed",
                 str(tmp_path / "pre"), "--spacing", "6", "--folds", "2", "--overwrite"]) == 0
    splits = json.loads((tmp_path / "pre" / "Dataset965_ACDCS" / "splits_final.json").read_text())
    assert [len(s["val"]) for s in splits] == [4, 4], "two folds of two patients (both frames each)"
    dataset = json.loads((raw / "Dataset965_ACDCS" / "dataset.json").read_text())
    assert dataset["mesh_conversion"]["num_folds"] == 2


def test_make_splits_reduces_instead_of_aborting():
    from nnunet_equivariant.meshes.nnunet_dataset import make_splits
    from nnunet_equivariant.meshes.sources import MeshSource

    grouped = MeshSource("ACDCS", [], ("a",))
    with pytest.warns(UserWarning, match="one fold only: fold 0 trains and validates on the same cases"):
        (only,) = make_splits(grouped, ["p1_ED", "p1_ES"], ["p1", "p1"])
    assert only == {"train": ["p1_ED", "p1_ES"], "val": ["p1_ED", "p1_ES"]}
    official = MeshSource("IntrA", [], ("a",), folds=[["AN1"], ["AN2"], ["AN3"], ["AN4"], ["AN5"]])
    with pytest.warns(UserWarning, match=r"official folds \[1, 3, 4\] have no converted case and were dropped"):
        splits = make_splits(official, ["AN1", "AN3"], ["AN1", "AN3"])
    assert splits == [{"train": ["AN3"], "val": ["AN1"]}, {"train": ["AN1"], "val": ["AN3"]}]
    assert len(make_splits(official, ["AN1", "AN2", "AN3"], ["AN1", "AN2", "AN3"], num_folds=3)) == 3, \
        "an explicit number of folds replaces the official ones"


def test_make_splits_edge_cases():
    from nnunet_equivariant.meshes.nnunet_dataset import make_splits
    from nnunet_equivariant.meshes.sources import MeshSource

    official = MeshSource("IntrA", [], ("a",), folds=[["AN1"], ["AN2"], [], [], []])
    with pytest.warns(UserWarning, match="no official fold holds a converted case: group-wise folds instead"):
        splits = make_splits(official, ["AN7", "AN8", "AN9"], ["AN7", "AN8", "AN9"])
    assert sorted(s["val"][0] for s in splits) == ["AN7", "AN8", "AN9"]
    with pytest.warns(UserWarning, match="one fold only"):
        assert make_splits(official, ["AN1", "AN7"], ["AN1", "AN7"]) == [{"train": ["AN1", "AN7"], "val": ["AN1"]}]
    with pytest.warns(UserWarning, match="no training case"):
        assert make_splits(official, [], []) == []
