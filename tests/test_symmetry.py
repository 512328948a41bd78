"""The symmetry module: each group's grid elements, flips and cosets, derived from its generators."""
import pytest
import torch
from e3nn import o3

from nnunet_equivariant.inference.mirroring import non_redundant_mirror_axes
from nnunet_equivariant.symmetry import (
    GROUPS, MIRROR_SYMMETRIES, coset_representatives, flip_matrix, generate_group, get_symmetry, grid_rotations,
    grid_symmetries, symmetry_axes, transform_volume,
)
from nnunet_equivariant.testing import irreps_D

ORDERS = {"none": 1, "f1": 2, "f2": 2, "f3": 2, "f12": 4, "f13": 4, "f23": 4, "f123": 8, "so3": 24, "o3": 48}


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_group_is_closed_and_has_the_expected_order(name):
    group = get_symmetry(name)
    elements = group.grid_elements()
    assert group.order == ORDERS[name] == len(elements)
    assert torch.equal(elements[0], torch.eye(3, dtype=torch.float64)), "identity first"
    for a in elements:
        assert group.contains(a.T), "closed under inverses (a grid element's inverse is its transpose)"
        for b in elements:
            assert group.contains(a @ b), "closed under products"


def test_grid_groups():
    assert len(grid_symmetries()) == 48 and len(grid_rotations()) == 24
    assert {tuple(m.flatten().tolist()) for m in get_symmetry("so3").grid_elements()} == \
        {tuple(m.flatten().tolist()) for m in grid_rotations()}
    assert not get_symmetry("so3").has_reflections and get_symmetry("o3").has_reflections
    assert get_symmetry("f1").has_reflections and not get_symmetry("none").has_reflections


@pytest.mark.parametrize("name, flips, mirror_axes", [
    ("none", [frozenset()], None),
    ("f2", [frozenset(), frozenset({1})], (0, 2)),
    ("f13", [frozenset(), frozenset({0}), frozenset({2}), frozenset({0, 2})], (1,)),
    ("so3", [frozenset(), frozenset({0, 1}), frozenset({0, 2}), frozenset({1, 2})], (0,)),
    ("o3", None, None),
    ("f123", None, None),
])
def test_flip_sets_and_non_redundant_mirroring(name, flips, mirror_axes):
    """A group's flips decide nnU-Net's test-time mirroring axes (None: one pass)."""
    group = get_symmetry(name)
    if flips is None:
        assert len(group.flip_sets) == 8
    else:
        assert sorted(group.flip_sets, key=sorted) == sorted(flips, key=sorted)
    expected = (0, 1, 2) if name == "none" else mirror_axes
    assert non_redundant_mirror_axes((0, 1, 2), group.flip_generators) == expected


def test_mirror_names_and_axes():
    assert MIRROR_SYMMETRIES == (None, "f1", "f2", "f3", "f12", "f13", "f23", "f123")
    assert symmetry_axes("f13") == (0, 2) and symmetry_axes(None) == ()
    with pytest.raises(ValueError, match="'so3'"):
        symmetry_axes("so3")
    with pytest.raises(ValueError, match="'f4'"):
        get_symmetry("f4")
    with pytest.raises(ValueError, match="not a grid symmetry"):
        generate_group([torch.eye(3) * 2])


@pytest.mark.parametrize("name", ["none", "f1", "f23", "f123", "so3", "o3"])
def test_coset_representatives_average_like_the_whole_group(name):
    """For f commuting with H, the mean of g^-1 f(g x) over the 48 symmetries equals the mean over one
    representative per right coset H g; there are 48 / |H| of them."""
    group = get_symmetry(name)
    reps = coset_representatives(grid_symmetries(), group.grid_elements())
    assert len(reps) == 48 // group.order
    # a function of points that commutes exactly with H: the H-average of an arbitrary map
    torch.manual_seed(0)
    A = torch.randn(3, 3, dtype=torch.float64)
    H = group.grid_elements()

    def f(p):
        return sum(h @ torch.tanh(A @ (h.T @ p)) for h in H) / len(H)

    p = torch.randn(3, dtype=torch.float64)
    full = sum(g.T @ f(g @ p) for g in grid_symmetries()) / 48
    reduced = sum(g.T @ f(g @ p) for g in reps) / len(reps)
    assert torch.allclose(full, reduced, rtol=0, atol=1e-14)


def test_flip_matrix():
    assert torch.equal(flip_matrix([0, 2]), torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64)))
    with pytest.raises(ValueError, match="3"):
        flip_matrix([3])


def test_transform_volume_is_a_representation():
    irreps = o3.Irreps("1o + 2e")
    x = torch.randn(2, irreps.dim, 4, 5, 6, dtype=torch.float64)
    for a, b in [(grid_rotations()[5], grid_symmetries()[30]), (flip_matrix([0]), grid_rotations()[17])]:
        ab = transform_volume(x, a @ b, irreps_D(irreps, a @ b))
        a_b = transform_volume(transform_volume(x, b, irreps_D(irreps, b)), a, irreps_D(irreps, a))
        assert torch.allclose(ab, a_b, rtol=0, atol=1e-12), "transforming by AB equals transforming by B then A"


def test_transform_moves_points_like_the_matrix():
    x = torch.zeros(1, 1, 5, 5, 5, dtype=torch.float64)
    x[0, 0, 4, 2, 2] = 1  # the point (+2, 0, 0) about the centre
    R = torch.tensor([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)  # 90 deg about z
    y = transform_volume(x, R)
    assert y[0, 0, 2, 4, 2] == 1, "(+2, 0, 0) is rotated to (0, +2, 0)"


def test_transform_volume_names_bad_arguments():
    x = torch.zeros(1, 2, 3, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="not a grid symmetry"):
        transform_volume(x, torch.tensor([[1.0, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(batch, channels, x, y, z\)"):
        transform_volume(x[0], torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"D must be \(2, 2\)"):
        transform_volume(x, torch.eye(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
