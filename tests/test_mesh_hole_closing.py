"""Hole closing keeps every original vertex first and in order and yields a closed, outward-wound surface."""
import numpy as np
import pytest
import trimesh

from nnunet_equivariant.meshes.hole_closing import boundary_loops, close_holes
from nnunet_equivariant.meshes.standins import vessel_mesh


def assert_closed_and_kept(v, f, cv, cf):
    m = trimesh.Trimesh(cv, cf, process=False)
    assert m.is_watertight, "every edge is shared by exactly two faces"
    assert m.is_winding_consistent, "faces are consistently wound"
    assert m.volume > 0, "normals point outwards (positive enclosed volume)"
    assert np.array_equal(cv[: len(v)], v), "original vertices come first, unchanged and in order"
    assert np.array_equal(cf[: len(f)], f), "original faces come first, unchanged"


@pytest.mark.parametrize("seed", range(4))
def test_ragged_vessel_ends_are_capped(seed):
    v, f, _ = vessel_mesh(seed)
    assert len(boundary_loops(f)) == 3, "the stand-in vessel is open at its three ends"
    cv, cf = close_holes(v, f, name="vessel")
    assert_closed_and_kept(v, f, cv, cf)
    assert boundary_loops(cf) == []


def test_cleanly_cut_tube_gets_one_centroid_fan_per_end():
    tube = trimesh.creation.cylinder(radius=1.0, height=3.0, sections=24)
    side = np.abs(tube.face_normals[:, 2]) < 0.5  # drop the two end caps
    v, f = np.asarray(tube.vertices), np.asarray(tube.faces[side])
    used = np.unique(f)
    remap = np.full(len(v), -1)
    remap[used] = np.arange(len(used))
    v, f = v[used], remap[f]
    cv, cf = close_holes(v, f)
    assert_closed_and_kept(v, f, cv, cf)
    assert len(cv) == len(v) + 2, "one centroid vertex per end"
    np.testing.assert_allclose(sorted(cv[len(v):, 2]), [-1.5, 1.5], atol=1e-12)
    np.testing.assert_allclose(trimesh.Trimesh(cv, cf, process=False).volume, tube.volume, rtol=1e-12)


def _box_with_c_shaped_hole():
    """A closed 6x6x1 grid box with a C-shaped set of squares removed from its top: a hole that is not
    star-shaped around its centroid, so it must be ear-clipped."""
    box = trimesh.creation.box(extents=(6, 6, 1))
    box = box.subdivide_to_size(1.0)
    box.merge_vertices()
    c = box.triangles_center
    top = c[:, 2] > 0.49
    x, y = c[:, 0], c[:, 1]
    c_shape = top & (((np.abs(x + 1.5) < 0.5) & (np.abs(y) < 2)) |
                     ((np.abs(y - 1.5) < 0.5) & (x > -2) & (x < 1.5)) |
                     ((np.abs(y + 1.5) < 0.5) & (x > -2) & (x < 1.5)))
    v, f = np.asarray(box.vertices), np.asarray(box.faces[~c_shape])
    return v, f


def test_non_star_shaped_hole_is_ear_clipped():
    v, f = _box_with_c_shaped_hole()
    (loop,) = boundary_loops(f)
    cv, cf = close_holes(v, f)
    assert_closed_and_kept(v, f, cv, cf)
    assert len(cv) == len(v), "ear clipping adds no vertex"
    np.testing.assert_allclose(trimesh.Trimesh(cv, cf, process=False).volume, 36.0, rtol=1e-9)


def test_inconsistent_winding_is_repaired_and_inside_out_meshes_flipped():
    v, f, _ = vessel_mesh(1)
    flipped = f.copy()
    flipped[::7] = flipped[::7, ::-1]
    cv, cf = close_holes(v, flipped)
    m = trimesh.Trimesh(cv, cf, process=False)
    assert m.is_watertight and m.is_winding_consistent and m.volume > 0
    assert np.array_equal(cv[: len(v)], v)
    inside_out = close_holes(v, f[:, ::-1].copy())
    assert trimesh.Trimesh(*inside_out, process=False).volume > 0


def test_meshes_that_cannot_be_closed_raise_naming_the_mesh():
    v, f, _ = vessel_mesh(0)
    with pytest.raises(ValueError, match="AN9.obj.*non-manifold"):
        close_holes(v, np.concatenate([f, f[len(f) // 2:len(f) // 2 + 1]]), name="AN9.obj")  # a doubled face
    # two squares sharing one corner: their boundary loops touch at that vertex
    bowtie_v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [-1, 0, 0], [-1, -1, 0], [0, -1, 0.0]])
    bowtie_f = np.array([[0, 1, 2], [0, 2, 3], [0, 4, 5], [0, 5, 6]])
    with pytest.raises(ValueError, match="bowtie: two boundary loops touch"):
        close_holes(bowtie_v, bowtie_f, name="bowtie")
