"""The one home of "which group": names, parity, the flips and grid rotations each group contains, irreps ratios,
and how a grid element acts on a volume (``transform_volume``), shared by rotation TTA and tests.

Every network of this package commutes with a group of transformations of the voxel grid. Layers,
networks, trainers (their test-time mirroring), inference (rotation TTA, laterality) and tests read the
group here, by name:

========  =========  =====================================================  ===========================
name      family     grid elements the network commutes with                 default hidden irreps ratio
========  =========  =====================================================  ===========================
none      none       the identity                                           -
f1 .. f3  mirror     the flip of that data axis (2 elements)                -
f12 ..    mirror     every combination of flips of the named axes           -
f123      mirror     all 8 axis flips                                       -
so3       steerable  the 24 rotations of the cube                           8x0e + 4x1e + 2x2e
o3        steerable  all 48 symmetries of the cube (rotations, reflections) 8x0e + 4x1o + 2x2e
========  =========  =====================================================  ===========================

The mirror names follow Dordiuk et al.: f1, f2, f3 are nnU-Net's data axes 0, 1, 2 (tensor dims 2, 3, 4).
In O(3) the hidden irreps carry the parities a scalar image produces through spherical harmonics: Y^1 is
odd (1o), Y^2 even (2e).

Convention
----------
- A grid element is a 3x3 signed permutation matrix ``R`` (float64) acting on centred voxel coordinates
  ``p = (x, y, z)`` of the spatial dims 2, 3, 4; a field transforms as ``(R f)(p) = D(R) f(R^-1 p)``
  (``transform_volume``).
- A flip set is a ``frozenset`` of data axes; it is the diagonal grid element with ``-1`` on those axes.
- Equivariance to a grid element is exact only where the element maps the network's lattices (kernel
  taps, pooling windows, strides, voxel spacing) to themselves: the caller checks that (e.g. isotropic
  spacing for 90-degree rotations), this module only names the group.

Adding a group is one entry in ``GROUPS`` (a name, a family and its generators) plus its tests.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

__all__ = [
    "Symmetry",
    "GROUPS",
    "MIRROR_SYMMETRIES",
    "get_symmetry",
    "symmetry_axes",
    "grid_symmetries",
    "grid_rotations",
    "flip_matrix",
    "flip_set_of",
    "generate_group",
    "coset_representatives",
    "transform_volume",
]


def grid_symmetries(dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """All 48 signed permutation matrices (the symmetries of the cube), identity first."""
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = torch.zeros(3, 3, dtype=dtype)
            for i in range(3):
                m[i, perm[i]] = signs[i]
            mats.append(m)
    return mats


def grid_rotations(dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """The 24 proper rotations of the cube (determinant +1), identity first."""
    return [m for m in grid_symmetries(dtype) if torch.det(m) > 0]


def flip_matrix(axes: Iterable[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The diagonal grid element that flips the data ``axes`` (0 = x = tensor dim 2, ...)."""
    m = torch.eye(3, dtype=dtype)
    for a in axes:
        if a not in (0, 1, 2):
            raise ValueError(f"spatial axis must be 0, 1 or 2, got {a!r}")
        m[a, a] = -1
    return m


def _signed_permutation(R: torch.Tensor) -> tuple[list[int], list[int]]:
    """``(perm, signs)`` with ``R[i, perm[i]] = signs[i]``; ``ValueError`` if ``R`` is not a grid element."""
    Rr = torch.round(R).to(torch.int64)
    if not torch.allclose(R.to(torch.float64), Rr.to(torch.float64)) or (Rr.abs().sum(1) != 1).any() \
            or (Rr.abs().sum(0) != 1).any():
        raise ValueError(f"not a grid symmetry (signed permutation matrix): {R.tolist()}")
    perm = [int(Rr[i].abs().argmax()) for i in range(3)]
    signs = [int(Rr[i, perm[i]]) for i in range(3)]
    return perm, signs


def transform_volume(x: torch.Tensor, R: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """Apply the grid element ``R`` to a field ``x`` of shape ``(batch, channels, x, y, z)``.

    ``D`` is the ``(channels, channels)`` matrix acting on the channels (``None``: scalars, unchanged; for
    e3nn irreps ``irreps.D_from_matrix(R)``, see ``testing.irreps_D`` for float64). Returns
    ``D f(R^-1 p)`` (module Convention); exact (a permutation of voxels), so it can be used in float64 tests.
    ``ValueError`` if ``x`` is not 5-dimensional, ``R`` not a grid element or ``D`` of the wrong shape.
    """
    if x.dim() != 5:
        raise ValueError(f"expected a (batch, channels, x, y, z) tensor, got shape {tuple(x.shape)}")
    perm, signs = _signed_permutation(R)
    # out[..., p] = x[..., q] with q[perm[i]] = signs[i] * p[i]
    y = x.permute(0, 1, *(2 + p for p in perm))
    flip = [2 + i for i in range(3) if signs[i] < 0]
    if flip:
        y = y.flip(flip)
    if D is not None:
        if D.shape != (x.shape[1], x.shape[1]):
            raise ValueError(f"D must be ({x.shape[1]}, {x.shape[1]}), got {tuple(D.shape)}")
        y = torch.einsum("ij,bj...->bi...", D.to(y.dtype), y)
    return y.contiguous()


def flip_set_of(R: torch.Tensor) -> frozenset[int] | None:
    """The axes a diagonal grid element flips, or ``None`` if ``R`` is not diagonal."""
    if bool((R - torch.diag(torch.diagonal(R))).abs().max() > 0):
        return None
    return frozenset(i for i in range(3) if float(R[i, i]) < 0)


def _key(R: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(v) for v in torch.round(R).to(torch.int64).flatten().tolist())


def generate_group(generators: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The finite group generated by grid elements (closure under products), identity first, then in the
    order of ``grid_symmetries()``. Raises ``ValueError`` for a matrix that is not a grid element."""
    table = {_key(m): m for m in grid_symmetries()}
    for g in generators:
        if _key(g) not in table or not torch.equal(g.to(torch.float64), table[_key(g)]):
            raise ValueError(f"not a grid symmetry (signed permutation matrix): {g.tolist()}")
    found = {_key(torch.eye(3, dtype=torch.float64))}
    frontier = list(found)
    gens = [table[_key(g)] for g in generators]
    while frontier:
        new = []
        for k in frontier:
            for g in gens:
                p = _key(g @ table[k])
                if p not in found:
                    found.add(p)
                    new.append(p)
        frontier = new
    return [m for k, m in table.items() if k in found]


def coset_representatives(elements: Sequence[torch.Tensor], subgroup: Sequence[torch.Tensor]
                          ) -> list[torch.Tensor]:
    """One element of ``elements`` per right coset ``H g`` of ``subgroup`` ``H``, first-seen order.

    If ``f`` commutes with every ``h`` in ``H``, then ``g^-1 f(g x)`` is the same for all ``g`` of a right
    coset ``H g`` (``(h g)^-1 f(h g x) = g^-1 h^-1 h f(g x)``), so an average over ``elements`` (a union of
    such cosets, e.g. a group containing ``H``) equals the average over these representatives."""
    subgroup = [h.to(torch.float64) for h in subgroup]
    seen: set[tuple[int, ...]] = set()
    reps = []
    for g in elements:
        if _key(g) in seen:
            continue
        reps.append(g)
        seen |= {_key(h @ g.to(torch.float64)) for h in subgroup}
    return reps


@dataclass(frozen=True)
class Symmetry:
    """A group a network commutes with, given by generating grid elements.

    ``family``: ``"none"``, ``"mirror"`` (kernels symmetric along ``mirror_axes``) or ``"steerable"``
    (e3nn irreps; ``parity``: reflections included, O(3)). ``irreps_ratio``: the default hidden irreps of a
    steerable network (scaled to each stage's width).
    """

    name: str
    family: str
    generators: tuple[tuple[int, ...], ...]  # grid elements as flattened 3x3 integer matrices
    mirror_axes: tuple[int, ...] = ()
    parity: bool = False
    irreps_ratio: str | None = None

    @functools.cached_property
    def _elements(self) -> tuple[torch.Tensor, ...]:
        gens = [torch.tensor(g, dtype=torch.float64).view(3, 3) for g in self.generators]
        return tuple(generate_group(gens))

    def grid_elements(self, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
        """Every grid element of the group, identity first (fresh tensors of ``dtype``)."""
        return [m.to(dtype, copy=True) for m in self._elements]

    @property
    def order(self) -> int:
        return len(self._elements)

    @property
    def flip_sets(self) -> tuple[frozenset[int], ...]:
        """The axis flips in the group (a group under symmetric difference), empty set first."""
        return tuple(s for s in map(flip_set_of, self._elements) if s is not None)

    @property
    def flip_generators(self) -> tuple[tuple[int, ...], ...]:
        """The non-trivial flip sets as sorted tuples (generators of ``flip_sets``), for mirroring."""
        return tuple(tuple(sorted(s)) for s in self.flip_sets if s)

    @property
    def has_reflections(self) -> bool:
        """True if the group holds an improper element (determinant -1): the network cannot tell an
        object from its mirror image along some direction."""
        return any(float(torch.det(m)) < 0 for m in self._elements)

    def contains(self, R: torch.Tensor) -> bool:
        """True if the grid element ``R`` is in the group."""
        return any(torch.equal(R.to(torch.float64), m) for m in self._elements)


def _flip_generators(axes: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(v) for v in flip_matrix([a]).to(torch.int64).flatten()) for a in axes)


def _mirror(axes: tuple[int, ...]) -> Symmetry:
    return Symmetry("f" + "".join(str(a + 1) for a in axes), "mirror", _flip_generators(axes), mirror_axes=axes)


# Generators: a 90-degree rotation about x and one about z generate the 24 rotations; adding the
# inversion -I gives all 48 symmetries.
_ROT_X = (1, 0, 0, 0, 0, -1, 0, 1, 0)
_ROT_Z = (0, -1, 0, 1, 0, 0, 0, 0, 1)
_INVERSION = (-1, 0, 0, 0, -1, 0, 0, 0, -1)

#: Every group by name. Adding a group: one entry here plus its tests.
GROUPS: dict[str, Symmetry] = {
    "none": Symmetry("none", "none", ()),
    **{s.name: s for s in (_mirror(axes) for r in (1, 2, 3) for axes in itertools.combinations(range(3), r))},
    "so3": Symmetry("so3", "steerable", (_ROT_X, _ROT_Z), irreps_ratio="8x0e+4x1e+2x2e"),
    "o3": Symmetry("o3", "steerable", (_ROT_X, _ROT_Z, _INVERSION), parity=True, irreps_ratio="8x0e+4x1o+2x2e"),
}

#: Every accepted ``symmetry`` of the mirror-symmetric layers: ``None`` (plain) and f1 .. f123.
MIRROR_SYMMETRIES: tuple[str | None, ...] = (None, *(n for n, s in GROUPS.items() if s.family == "mirror"))


def get_symmetry(name: str | None) -> Symmetry:
    """The group called ``name`` (``None`` means ``"none"``); ``ValueError`` naming the value otherwise."""
    key = "none" if name is None else name
    if key not in GROUPS:
        raise ValueError(f"unknown symmetry {name!r}: choose one of {sorted(GROUPS)}")
    return GROUPS[key]


def symmetry_axes(symmetry: str | None) -> tuple[int, ...]:
    """Data axes (0, 1, 2 = tensor dims 2, 3, 4) of a mirror symmetry name: ``"f13" -> (0, 2)``,
    ``None -> ()``. ``ValueError`` for names that are not mirror symmetries."""
    if symmetry not in MIRROR_SYMMETRIES:
        raise ValueError(f"symmetry must be one of {MIRROR_SYMMETRIES}, got {symmetry!r}")
    return get_symmetry(symmetry).mirror_axes
