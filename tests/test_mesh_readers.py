"""IntrA and ACDC readers on stand-ins in the real layouts; ACDC-S vertex labels recovered exactly."""
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial import cKDTree

from nnunet_equivariant.meshes.acdc import find_acdc_cases, read_info_cfg
from nnunet_equivariant.meshes.intra import find_intra_cases, read_ad, read_intra_case, read_intra_folds
from nnunet_equivariant.meshes.standins import heart_labels, write_acdc_standin, write_intra_standin
from nnunet_equivariant.meshes.acdc_s import ACDC_S_CLASSES, acdc_surface, labelled_surface


@pytest.fixture(scope="module")
def intra_root(tmp_path_factory):
    return write_intra_standin(tmp_path_factory.mktemp("intra") / "IntrA", num_cases=5)


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory):
    return write_acdc_standin(tmp_path_factory.mktemp("acdc") / "ACDC", num_patients=2)


def test_intra_case_keeps_ad_vertices_and_labels(intra_root):
    cases = find_intra_cases(intra_root)
    assert [c.name for c in cases] == ["AN1", "AN2", "AN3", "AN4", "AN5"]
    assert cases[0].obj.name == "AN1_full.obj"
    points, _, ad_labels = read_ad(cases[0].ad)
    assert set(np.unique(ad_labels)) == {0, 1, 2}, "the stand-in has vessel, aneurysm and neck labels"
    mesh = cases[0].read()
    assert mesh.class_names == ("vessel", "aneurysm")
    np.testing.assert_allclose(mesh.labelled_vertices, points, atol=1e-6)
    np.testing.assert_array_equal(mesh.labels, np.where(ad_labels == 2, 1, ad_labels),
                                  err_msg="labels map 1:1, the neck merged into the aneurysm")
    assert len(mesh.vertices) > mesh.num_labelled, "the open ends were capped with new vertices after the originals"


def test_intra_folds_follow_annsplit_files(intra_root):
    folds = read_intra_folds(intra_root)
    assert folds == [["AN1"], ["AN2"], ["AN3"], ["AN4"], ["AN5"]]


def test_intra_case_names_strip_the_norm_suffix(tmp_path):
    (tmp_path / "annotated" / "ad").mkdir(parents=True)
    (tmp_path / "annotated" / "ad" / "AN193-1-_norm.ad").write_text("0 0 0 0 0 1 0\n")
    (case,) = find_intra_cases(tmp_path)
    assert case.name == "AN193-1" and case.obj == tmp_path / "annotated" / "obj" / "AN193-1_full.obj"


def _copy_case(intra_root, tmp_path):
    ad = tmp_path / "AN1-_norm.ad"
    obj = tmp_path / "AN1_full.obj"
    shutil.copy(intra_root / "annotated" / "ad" / "AN1-_norm.ad", ad)
    shutil.copy(intra_root / "annotated" / "obj" / "AN1_full.obj", obj)
    return ad, obj


def _insert_vertex(obj_text: str, position: int, line: str, remap_faces: bool = True) -> str:
    """Insert a ``v`` line before the ``position``-th (0-based) vertex; faces keep pointing at their vertices."""
    out, seen = [], 0
    for text in obj_text.splitlines():
        if text.startswith("v "):
            if seen == position:
                out.append(line)
            seen += 1
            out.append(text)
        elif text.startswith("f ") and remap_faces:
            corners = []
            for token in text.split()[1:]:
                parts = token.split("/")
                if int(parts[0]) > position:
                    parts[0] = str(int(parts[0]) + 1)
                corners.append("/".join(parts))
            out.append("f " + " ".join(corners))
        else:
            out.append(text)
    return "\n".join(out) + "\n"


def test_intra_obj_with_an_unreferenced_duplicate_vertex_is_read(intra_root, tmp_path):
    """Real IntrA: 1740 .obj vertices for 1739 .ad points, one an unused duplicate; the case is kept whole."""
    ad, obj = _copy_case(intra_root, tmp_path)
    reference = read_intra_case(ad, obj)
    text = obj.read_text()
    vertex_lines = [t for t in text.splitlines() if t.startswith("v ")]
    middle = len(vertex_lines) // 2
    obj.write_text(_insert_vertex(text, middle, vertex_lines[middle]))
    assert sum(t.startswith("v ") for t in obj.read_text().splitlines()) == len(vertex_lines) + 1
    mesh = read_intra_case(ad, obj)
    np.testing.assert_array_equal(mesh.labels, reference.labels)
    np.testing.assert_array_equal(mesh.faces, reference.faces, err_msg="the faces map to the .ad points")
    np.testing.assert_allclose(mesh.vertices, reference.vertices, atol=1e-12)


def test_intra_obj_whose_faces_use_a_duplicate_vertex_is_read(intra_root, tmp_path):
    """A face may use either twin of a duplicated vertex: both twins are the same .ad point."""
    ad, obj = _copy_case(intra_root, tmp_path)
    reference = read_intra_case(ad, obj)
    text = obj.read_text()
    vertex_lines = [t for t in text.splitlines() if t.startswith("v ")]
    twin = len(vertex_lines)  # appended at the end, 1-based index twin + 1
    lines = text.splitlines() + [vertex_lines[0]]
    first_face = next(i for i, t in enumerate(lines) if t.startswith("f ") and
                      any(tok.split("/")[0] == "1" for tok in t.split()[1:]))
    lines[first_face] = "f " + " ".join(
        "/".join([str(twin + 1)] + tok.split("/")[1:]) if tok.split("/")[0] == "1" else tok
        for tok in lines[first_face].split()[1:])
    obj.write_text("\n".join(lines) + "\n")
    mesh = read_intra_case(ad, obj)
    np.testing.assert_array_equal(mesh.faces[: mesh.num_original_faces], reference.faces[: reference.num_original_faces])
    np.testing.assert_array_equal(mesh.labels, reference.labels)


def test_intra_bad_files_raise_naming_them(intra_root, tmp_path):
    ad, obj = _copy_case(intra_root, tmp_path)
    lines = ad.read_text().splitlines()

    ad.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match=f"{ad} and {obj} disagree: 1 .obj vertices used by faces have no .ad"):
        read_intra_case(ad, obj)

    moved = lines[0].split()
    moved[0] = str(float(moved[0]) + 1.0)
    ad.write_text("\n".join([" ".join(moved)] + lines[1:]) + "\n")
    with pytest.raises(ValueError, match="disagree: 1 of .* .ad points have no .obj vertex"):
        read_intra_case(ad, obj)

    flipped = [" ".join(line.split()[:6] + ["1" if line.split()[6] == "0" else "0"]) for line in lines]
    ad.write_text("\n".join(flipped) + "\n")
    with pytest.raises(ValueError, match="contradicts the .obj face groups"):
        read_intra_case(ad, obj)

    ad.write_text("\n".join(lines[:-1] + [" ".join(lines[-1].split()[:6] + ["5"])]) + "\n")
    with pytest.raises(ValueError, match=r"unknown labels \[5\]"):
        read_intra_case(ad, obj)

    ad.write_text("\n".join(lines) + "\n")
    obj.write_text(obj.read_text().replace("g others", "g walls"))
    with pytest.raises(ValueError, match="outside the 'aneurysm'/'others' groups"):
        read_intra_case(ad, obj)

    with pytest.raises(FileNotFoundError, match="annSplit_0.txt"):
        read_intra_folds(tmp_path)


def test_info_cfg_and_case_discovery(acdc_root):
    info = read_info_cfg(acdc_root / "training" / "patient001" / "Info.cfg")
    assert set(info) == {"ED", "ES", "Group", "Height", "NbFrame", "Weight"} and info["ED"] == "1"
    cases = find_acdc_cases(acdc_root)
    assert [c.name for c in cases] == ["patient001_ED", "patient001_ES", "patient002_ED", "patient002_ES"]
    assert {c.subset for c in cases} == {"training"}
    assert [c.name for c in find_acdc_cases(acdc_root / "training")] == [c.name for c in cases]


def _voxel_centres(image):
    """Physical positions of every voxel centre and a KD-tree over them."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in image.GetSize()], indexing="ij"), -1).reshape(-1, 3)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    world = np.array(image.GetOrigin()) + (idx * np.array(image.GetSpacing())) @ direction.T
    return world, cKDTree(world)


@pytest.mark.parametrize("patient", [1, 2])
def test_acdc_surface_labels_are_recovered_exactly(acdc_root, patient):
    """Each raw vertex sits midway between its two nearest voxel centres (the grid edge it lies on); its
    class is the one the analytic labels at those two centres name (myocardium/background epicardium,
    myocardium/LV endocardium, RV/background RV endocardium). Patient 2 has an improper direction."""
    folder = acdc_root / "training" / f"patient{patient:03d}"
    image = sitk.ReadImage(str(folder / f"patient{patient:03d}_frame01_gt.nii.gz"))
    heart_frame = np.loadtxt(folder / "heart_to_world.txt")
    mesh = acdc_surface(image, name="ED", smoothing_iterations=0)
    assert mesh.class_names == ACDC_S_CLASSES
    rotation, centre = heart_frame[:3], heart_frame[3]
    world, tree = _voxel_centres(image)
    dist, nearest = tree.query(mesh.vertices, k=8)
    on_edge = dist[:, 1] < dist[:, 2] - 1e-6  # two nearest centres strictly closest: a grid-edge vertex
    assert on_edge.mean() > 0.99
    a, b = world[nearest[on_edge, 0]], world[nearest[on_edge, 1]]
    np.testing.assert_allclose(mesh.vertices[on_edge], (a + b) / 2, atol=1e-6)
    la = heart_labels((a - centre) @ rotation, "ED")
    lb = heart_labels((b - centre) @ rotation, "ED")
    inner, outer = np.where(np.isin(la, (1, 2)), la, lb), np.where(np.isin(la, (1, 2)), lb, la)
    expected = np.select([(inner == 2) & (outer == 0), (inner == 2) & (outer == 3), (inner == 1) & (outer == 0)],
                         [0, 1, 2], -1)
    assert np.all(expected >= 0)
    np.testing.assert_array_equal(mesh.labels[on_edge], expected)
    assert set(np.unique(mesh.labels)) == {0, 1, 2}


def test_smoothing_keeps_order_and_labels_and_stays_near_the_raw_surface(acdc_root):
    image = sitk.ReadImage(str(acdc_root / "training" / "patient001" / "patient001_frame01_gt.nii.gz"))
    raw = acdc_surface(image, smoothing_iterations=0)
    smooth = acdc_surface(image, smoothing_iterations=10)
    np.testing.assert_array_equal(smooth.labels, raw.labels)
    np.testing.assert_array_equal(smooth.faces, raw.faces)
    moved = np.linalg.norm(smooth.vertices - raw.vertices, axis=1)
    assert 0 < np.median(moved) < 4.0, "Taubin smoothing moves vertices by less than half a slice (8 mm)"


def test_acdc_bad_inputs_raise_naming_the_file(acdc_root, tmp_path):
    patient = tmp_path / "patient007"
    shutil.copytree(acdc_root / "training" / "patient001", patient)
    for f in patient.glob("patient001*"):
        f.rename(patient / f.name.replace("patient001", "patient007"))
    ed, es = find_acdc_cases(tmp_path)
    gt = patient / "patient007_frame01_gt.nii.gz"
    labels = sitk.ReadImage(str(gt))
    array = sitk.GetArrayFromImage(labels)
    array[array == 1] = 0
    broken = sitk.GetImageFromArray(array)
    broken.CopyInformation(labels)
    sitk.WriteImage(broken, str(gt))
    with pytest.raises(ValueError, match=rf"{gt}: labels \[1\] are missing"):
        ed.read()
    array[0, 0, 0] = 7
    broken = sitk.GetImageFromArray(array)
    broken.CopyInformation(labels)
    sitk.WriteImage(broken, str(gt))
    with pytest.raises(ValueError, match=r"unknown labels \[7\]"):
        ed.read()
    (es_file,) = [p for p in patient.glob("*_gt.nii.gz") if p != gt]
    es_file.unlink()
    with pytest.raises(FileNotFoundError, match=f"{es_file}.*ES frame"):
        es.read()
    (patient / "Info.cfg").write_text("ED: 1\nGroup: NOR\n")
    with pytest.raises(ValueError, match="Info.cfg: no ES frame"):
        es.read()


def test_rv_touching_lv_cavity_is_rejected():
    labels = np.zeros((8, 8, 8), dtype=np.uint8)
    labels[2:6, 2:6, 2:6] = 2
    labels[3:5, 3:5, 3:5] = 3
    labels[5, 3:5, 3:5] = 1  # RV cavity in the wall, next to the LV cavity
    with pytest.raises(ValueError, match=r"surface between labels \[\(1, 3\)\]"):
        labelled_surface(labels, "bad")
