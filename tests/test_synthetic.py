"""Rendering options of the synthetic rods and discs: smooth edges, smoothed noise, tight placement."""
from dataclasses import replace

import numpy as np

from nnunet_equivariant.demo import DEMO_GEOMETRY
from nnunet_equivariant.synthetic import RodsAndDiscs, render_case

SHAPE, SPACING = (24, 24, 24), (1.0, 1.0, 1.0)


def _kinds(label):
    return {int(k) for k in np.unique(label) if k}


def test_smooth_edges_keep_the_labels_and_mark_them_at_half_intensity():
    hard = RodsAndDiscs(noise=0.0)
    smooth = replace(hard, edge_width=0.8)
    for seed in range(4):
        image_h, label_h = render_case((32,) * 3, SPACING, np.random.default_rng(seed), geometry=hard)
        image_s, label_s = render_case((32,) * 3, SPACING, np.random.default_rng(seed), geometry=smooth)
        np.testing.assert_array_equal(label_s, label_h)  # same shapes, same labels (signed distance <= 0)
        np.testing.assert_array_equal(image_h, (label_h > 0).astype(np.float32))
        assert ((image_s >= 0.5) == (label_s > 0)).all()
        assert 0 <= image_s.min() and image_s.max() < 1
        partial = (image_s > 0.05) & (image_s < 0.95)  # the smooth edge: a shell around every shape
        assert partial.sum() > (label_s > 0).sum() / 2


def test_smoothed_noise_keeps_its_standard_deviation_and_is_correlated():
    geometry = RodsAndDiscs(intensity=0.0, noise=0.15, noise_smoothing=0.7)
    image, _ = render_case(SHAPE, SPACING, np.random.default_rng(0), n_rods=0, n_discs=0, geometry=geometry)
    assert abs(image.std() - 0.15) < 1e-5
    neighbours = np.corrcoef(image[:-1].ravel(), image[1:].ravel())[0, 1]
    assert neighbours > 0.5, f"smoothed noise should be correlated between neighbours, got {neighbours:.2f}"


def test_tight_placement_fits_the_demo_shapes_side_by_side():
    rng_tight, rng_loose = np.random.default_rng(1), np.random.default_rng(1)
    both_tight = both_loose = 0
    for _ in range(8):
        _, label = render_case(SHAPE, SPACING, rng_tight, geometry=DEMO_GEOMETRY)
        both_tight += _kinds(label) == {1, 2}
        _, label = render_case(SHAPE, SPACING, rng_loose, geometry=replace(DEMO_GEOMETRY, tight_placement=False))
        both_loose += _kinds(label) == {1, 2}
    assert both_loose == 0 and both_tight >= 6, (both_loose, both_tight)
