"""The equivariance helpers themselves (the volume transforms they use are tested in test_symmetry.py)."""
import torch
from e3nn import o3

from nnunet_equivariant import symmetry, testing
from nnunet_equivariant.testing import assert_equivariant, equivariance_error, grid_rotations, grid_symmetries


def test_grid_groups_have_the_right_sizes_and_are_closed():
    sym, rot = grid_symmetries(), grid_rotations()
    assert len(sym) == 48 and len(rot) == 24
    keys = {tuple(m.flatten().tolist()) for m in sym}
    for a in rot[:6]:
        for b in sym[:12]:
            assert tuple((a @ b).flatten().tolist()) in keys, "the 48 matrices form a group"


def test_gradient_field_is_equivariant_as_a_vector():
    def grad(f):  # central differences: a scalar field -> a 1o field, (x, y, z) components
        return torch.cat([(f.roll(-1, d) - f.roll(1, d)) / 2 for d in (2, 3, 4)], dim=1)

    x = torch.randn(2, 1, 6, 6, 6, dtype=torch.float64)
    assert_equivariant(grad, x, grid_symmetries(), rep_in=None, rep_out=o3.Irreps("1o"))
    wrong = equivariance_error(grad, x, grid_rotations()[3], None, None)
    assert wrong > 0.1, "treating the vector as 3 scalars is detected as not equivariant"


def test_the_helpers_transform_volumes_with_the_groups_own_action():
    assert testing.transform_volume is symmetry.transform_volume, "one action of a grid element on a volume"
