"""The equivariance helpers themselves: grid symmetries and volume transforms are exact."""
import torch
from e3nn import o3

from nnunet_equivariant.testing import (
    assert_equivariant, axis_flips, irreps_D, equivariance_error, grid_rotations, grid_symmetries, transform_volume,
)


def test_grid_groups_have_the_right_sizes_and_are_closed():
    sym, rot = grid_symmetries(), grid_rotations()
    assert len(sym) == 48 and len(rot) == 24
    keys = {tuple(m.flatten().tolist()) for m in sym}
    for a in rot[:6]:
        for b in sym[:12]:
            assert tuple((a @ b).flatten().tolist()) in keys, "the 48 matrices form a group"


def test_transform_volume_is_a_representation():
    x = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    irreps = o3.Irreps("1o + 2e")
    x = torch.randn(2, irreps.dim, 4, 5, 6, dtype=torch.float64)
    for a, b in [(grid_rotations()[5], grid_symmetries()[30]), (axis_flips([0]), grid_rotations()[17])]:
        ab = transform_volume(x, a @ b, irreps_D(irreps, a @ b))
        a_b = transform_volume(transform_volume(x, b, irreps_D(irreps, b)), a, irreps_D(irreps, a))
        assert torch.allclose(ab, a_b, rtol=0, atol=1e-12), "transforming by AB equals transforming by B then A"


def test_transform_moves_points_like_the_matrix():
    x = torch.zeros(1, 1, 5, 5, 5, dtype=torch.float64)
    x[0, 0, 4, 2, 2] = 1  # the point (+2, 0, 0) about the centre
    R = torch.tensor([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)  # 90 deg about z
    y = transform_volume(x, R)
    assert y[0, 0, 2, 4, 2] == 1, "(+2, 0, 0) is rotated to (0, +2, 0)"


def test_gradient_field_is_equivariant_as_a_vector():
    def grad(f):  # central differences: a scalar field -> a 1o field, (x, y, z) components
        return torch.cat([(f.roll(-1, d) - f.roll(1, d)) / 2 for d in (2, 3, 4)], dim=1)

    x = torch.randn(2, 1, 6, 6, 6, dtype=torch.float64)
    assert_equivariant(grad, x, grid_symmetries(), rep_in=None, rep_out=o3.Irreps("1o"))
    wrong = equivariance_error(grad, x, grid_rotations()[3], None, None)
    assert wrong > 0.1, "treating the vector as 3 scalars is detected as not equivariant"
