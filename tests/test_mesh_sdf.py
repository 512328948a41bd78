"""Signed distance: exact against analytic shapes, negative inside, and patches cut exactly from the grid."""
import numpy as np
import pytest
import torch
import trimesh

from nnunet_equivariant.meshes.sdf import SdfGrid, compute_sdf_grid, extract_patches, patch_points, signed_distance

RNG = np.random.default_rng(0)


def sphere(radius=1.0):
    m = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    return np.asarray(m.vertices), np.asarray(m.faces)


def torus(major=2.0, minor=0.7):
    m = trimesh.creation.torus(major_radius=major, minor_radius=minor, major_sections=96, minor_sections=48)
    return np.asarray(m.vertices), np.asarray(m.faces)


def torus_sdf(p, major=2.0, minor=0.7):
    return np.hypot(np.hypot(p[:, 0], p[:, 1]) - major, p[:, 2]) - minor


def test_exact_sdf_matches_a_sphere_and_is_negative_inside():
    v, f = sphere()
    p = RNG.uniform(-1.6, 1.6, size=(4000, 3))
    s = signed_distance(p, v, f)
    analytic = np.linalg.norm(p, axis=1) - 1
    # the icosphere's flat faces sit inside the sphere by at most the sagitta, ~3e-4
    np.testing.assert_allclose(s, analytic, atol=5e-4)
    assert np.all(s[analytic < -0.01] < 0) and np.all(s[analytic > 0.01] > 0), "negative inside, positive outside"


def test_exact_sdf_matches_a_torus_with_sign_right_in_its_hole():
    v, f = torus()
    p = RNG.uniform([-3, -3, -1], [3, 3, 1], size=(4000, 3))
    s = signed_distance(p, v, f)
    np.testing.assert_allclose(s, torus_sdf(p), atol=3e-3)
    centre = signed_distance(np.zeros((1, 3)), v, f)
    assert centre[0] == pytest.approx(2.0 - 0.7, abs=3e-3), "the hole of the torus is outside"


def test_sign_on_a_non_convex_mesh():
    """A C-shaped solid of three boxes that meet face to face: points in its mouth are outside although
    inside its convex hull (the winding number handles the touching faces)."""
    boxes = [((1, 4, 1), (-1.5, 0, 0)), ((3, 1, 1), (0.5, 1.5, 0)), ((3, 1, 1), (0.5, -1.5, 0))]
    shift = trimesh.transformations.translation_matrix
    c = trimesh.util.concatenate([trimesh.creation.box(extents=e, transform=shift(t)) for e, t in boxes])
    v, f = np.asarray(c.vertices), np.asarray(c.faces)
    mouth = np.array([[0.5, 0.0, 0.0], [1.5, 0.0, 0.0]])
    solid = np.array([[-1.5, 0.0, 0.0], [0.5, 1.5, 0.0], [1.5, -1.5, 0.0]])
    assert np.all(signed_distance(mouth, v, f) > 0.4), "the mouth of the C is outside"
    assert np.all(signed_distance(solid, v, f) < -0.4), "the arms of the C are inside"


def test_convention_is_the_opposite_of_trimesh():
    v, f = sphere()
    p = RNG.uniform(-1.5, 1.5, size=(200, 3))
    ours = signed_distance(p, v, f)
    theirs = trimesh.proximity.signed_distance(trimesh.Trimesh(v, f, process=False), p)
    np.testing.assert_allclose(ours, -theirs, atol=1e-9)


def test_patch_layout_follows_the_paper():
    c = np.array([0.3, -0.2, 0.5])
    pts = patch_points(c, side=1.5, n=16)
    np.testing.assert_allclose(pts[0, 0, 0], c - 0.75)
    np.testing.assert_allclose(pts[15, 15, 15], c + 0.75)
    np.testing.assert_allclose(pts[1, 0, 0] - pts[0, 0, 0], [0.1, 0, 0])  # h = a / (N - 1), i along x
    np.testing.assert_allclose(pts[0, 0, 1] - pts[0, 0, 0], [0, 0, 0.1])  # k along z


@pytest.mark.parametrize("oversampling", [1, 2])
def test_block_patches_equal_per_sample_trilinear_interpolation(oversampling):
    """The fast path (one gathered block, three lerps) is trilinear interpolation of the grid."""
    values = RNG.normal(size=(40, 36, 44)).astype(np.float32)
    grid = SdfGrid(values=values, origin=np.array([-1.0, 2.0, 0.5]), spacing=0.1 / oversampling)
    side, n = 1.5, 16
    extent = (np.array(values.shape) - 1) * grid.spacing
    centres = grid.origin + 0.9 + RNG.uniform(0, 1.0, size=(50, 3)) * (extent - 1.8)
    patches = extract_patches(grid, centres, side, n)
    assert patches.shape == (50, 1, n, n, n) and patches.dtype == torch.float32
    expected = np.stack([grid.sample(patch_points(c, side, n).reshape(-1, 3)).reshape(n, n, n) for c in centres])
    np.testing.assert_allclose(patches[:, 0].numpy(), expected, atol=2e-5)


@pytest.mark.parametrize("shape", ["sphere", "torus"])
def test_grid_patches_are_within_0p2_percent_of_the_side(shape):
    v, f = sphere() if shape == "sphere" else torus()
    side, n = 1.2, 16
    centres = v[RNG.choice(len(v), 20, replace=False)]
    grid = compute_sdf_grid(v, f, side / (n - 1), margin=side / 2 + 0.2, band_centres=centres, band_side=side,
                            n=n)
    assert np.isnan(grid.values).any(), "only the band the patches read is computed"
    patches = extract_patches(grid, centres, side, n)[:, 0].numpy()
    assert not np.isnan(patches).any(), "patches around band centres read only computed nodes"
    pts = np.stack([patch_points(c, side, n) for c in centres]).reshape(-1, 3)
    exact = signed_distance(pts, v, f).reshape(patches.shape)
    err = np.abs(patches - exact)
    assert err.mean() < 0.002 * side, f"mean error {err.mean() / side:.2%} of the side"
    analytic = (np.linalg.norm(pts, axis=1) - 1) if shape == "sphere" else torus_sdf(pts)
    assert np.abs(patches.ravel() - analytic).mean() < 0.002 * side


def test_patches_outside_the_grid_raise():
    v, f = sphere()
    grid = compute_sdf_grid(v, f, 0.1, margin=0.2)
    with pytest.raises(ValueError, match="outside the SDF grid"):
        extract_patches(grid, np.zeros((1, 3)) + 1.0, side=1.5, n=16)
    with pytest.raises(ValueError, match="integer multiple of the grid spacing"):
        extract_patches(grid, np.zeros((1, 3)), side=1.0, n=16)


def c_shape():
    """Three boxes that meet face to face: inner faces and duplicated corners, no manifold surface."""
    boxes = [((1, 4, 1), (-1.5, 0, 0)), ((3, 1, 1), (0.5, 1.5, 0)), ((3, 1, 1), (0.5, -1.5, 0))]
    shift = trimesh.transformations.translation_matrix
    c = trimesh.util.concatenate([trimesh.creation.box(extents=e, transform=shift(t)) for e, t in boxes])
    return np.asarray(c.vertices), np.asarray(c.faces)


def test_grid_sign_from_pseudonormals_equals_the_winding_number_on_an_acdc_surface(tmp_path):
    """Grids take the sign from the closest feature's pseudonormal on closed surfaces (the fast path):
    on ACDC-S surfaces (thin myocardium, RV cavity outside, oblique proper and improper directions) band
    nodes equal libigl's winding-number signed distance."""
    from nnunet_equivariant.meshes.acdc import find_acdc_cases
    from nnunet_equivariant.meshes.sdf import pseudonormal_safe
    from nnunet_equivariant.meshes.standins import write_acdc_standin

    root = write_acdc_standin(tmp_path / "ACDC", num_patients=2)
    for case in find_acdc_cases(root)[1::2]:  # patient001_ES (proper), patient002_ES (improper direction)
        mesh = case.read()
        assert pseudonormal_safe(mesh.vertices, mesh.faces), "acdc_surface returns closed, consistent meshes"
        side, n = 9.0, 16
        centres = mesh.vertices[::150]
        grid = compute_sdf_grid(mesh.vertices, mesh.faces, side / (n - 1), margin=side / 2 + 2,
                                band_centres=centres, band_side=side, n=n)
        nodes = np.argwhere(np.isfinite(grid.values))
        nodes = nodes[RNG.choice(len(nodes), 3000, replace=False)]  # the winding number is the slow reference
        exact = signed_distance(grid.origin + grid.spacing * nodes, mesh.vertices, mesh.faces, sign="winding_number")
        assert (exact < 0).mean() > 0.2 and (exact > 0).mean() > 0.2, "the band has nodes on both sides"
        np.testing.assert_allclose(grid.values[tuple(nodes.T)], exact.astype(np.float32), rtol=0, atol=1e-5,
                                   err_msg="same values and signs as the winding number")


def test_grids_of_unsafe_meshes_fall_back_to_the_winding_number():
    from nnunet_equivariant.meshes.sdf import pseudonormal_safe

    v, f = c_shape()
    assert not pseudonormal_safe(v, f), "touching boxes are no manifold surface"
    grid = compute_sdf_grid(v, f, 0.25, margin=0.5)
    nodes = np.argwhere(np.isfinite(grid.values))
    np.testing.assert_allclose(grid.values[tuple(nodes.T)], signed_distance(grid.origin + 0.25 * nodes, v, f),
                               atol=1e-5)
    sv, sf = sphere()
    assert pseudonormal_safe(sv, sf)
    assert not pseudonormal_safe(sv, sf[1:]), "an open mesh"
    assert not pseudonormal_safe(np.vstack([sv, sv[:1]]), np.vstack([sf, [[len(sv), 1, 2]]])), \
        "a duplicated vertex position"
    with pytest.raises(ValueError, match="sign must be one of"):
        signed_distance(np.zeros((1, 3)), sv, sf, sign="parity")
