"""Non-redundant test-time mirroring gives the same average as nnU-Net's full 8-pass mirroring."""

import pytest
import torch

from nnunet_equivariant.inference.mirroring import flip_group, non_redundant_mirror_axes
from nnunet_equivariant.testing import all_flip_sets


def _mirror_mean(net, x, axes):
    return torch.stack([net(x.flip([2 + a for a in s])).flip([2 + a for a in s]) if s else net(x)
                        for s in all_flip_sets(axes)]).mean(0)


@pytest.mark.parametrize("generators, expected", [
    ([(0,), (1,), (2,)], None),            # O(3) / f123
    ([(0, 1), (1, 2)], (0,)),              # SO(3): two flips are a 180 deg rotation
    ([(0,)], (1, 2)), ([(1,)], (0, 2)), ([(2,)], (0, 1)),
    ([(0,), (1,)], (2,)), ([(0,), (2,)], (1,)), ([(1,), (2,)], (0,)),
    ([], (0, 1, 2)),
])
def test_reduced_axes_form_a_transversal(generators, expected):
    axes = non_redundant_mirror_axes((0, 1, 2), generators)
    assert axes == expected
    group = flip_group(generators)
    reps = [frozenset(s) for s in all_flip_sets(axes or ())]
    cosets = {frozenset(r ^ h for h in group) for r in reps}
    assert len(cosets) == len(reps) and len(reps) * len(group) == 8, "one pass per coset of the flip group"


def test_reduced_mirroring_equals_full_mirroring_for_a_flip_symmetric_net():
    torch.manual_seed(0)
    w = torch.randn(1, 1, 3, 3, 3, dtype=torch.float64)
    w = (w + w.flip(2)) / 2  # kernel symmetric along axis 0 -> conv commutes with flips of axis 0

    def net(x):
        return torch.nn.functional.conv3d(torch.tanh(torch.nn.functional.conv3d(x, w, padding=1)), w, padding=1)

    x = torch.randn(2, 1, 8, 7, 6, dtype=torch.float64)
    full = _mirror_mean(net, x, (0, 1, 2))
    reduced = _mirror_mean(net, x, non_redundant_mirror_axes((0, 1, 2), [(0,)]))
    assert torch.allclose(full, reduced, rtol=0, atol=1e-12), "4 passes give the 8-pass average"


def test_flip_group_needs_allowed_axes():
    with pytest.raises(ValueError, match="outside"):
        non_redundant_mirror_axes((1, 2), [(0,)])
    assert non_redundant_mirror_axes(None, [(0,)]) is None
