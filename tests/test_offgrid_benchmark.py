"""benchmarks/offgrid_equivariance.py's real-anatomy mode: the thin-structure band, the masked error (zero
for an exact grid rotation, with D(R) on irreps channels), the per-layer hooks and the variants' specs."""
import numpy as np
import pytest
import torch
from e3nn import o3

from benchmark_scripts import load_benchmark
from nnunet_equivariant.networks import E3nnSpec, E3nnUNet

bench = load_benchmark("offgrid_equivariance")


def test_boundary_band_holds_the_voxels_within_width_of_a_boundary_on_both_sides():
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[3:9, 3:9, 3:9] = 2  # a 6^3 cube
    labels[0, 0, 0] = 7  # another structure, not asked for
    band = bench.boundary_band(labels, [2], width=1.0)
    # the cube's outer shell (6^3 - 4^3) and the face-adjacent voxels outside it (6 faces of 6 x 6)
    assert band.sum() == (6 ** 3 - 4 ** 3) + 6 * 36
    assert not band[0, 0, 0] and not band[5, 5, 5], "far outside and deep inside are not in the band"
    assert bench.boundary_band(labels, [3], width=2.0).sum() == 0, "an absent structure has no band"
    wide = bench.boundary_band(labels, [2], width=2.0)
    assert (wide >= band).all() and wide[5, 5, 5] == 0 and wide[4, 5, 5]


def test_coarse_mask_pools_by_any_and_rejects_shapes_that_do_not_divide():
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[5, 2, 7] = True
    coarse = bench._coarse_mask(mask, (4, 4, 4))
    assert coarse.sum() == 1 and coarse[2, 1, 3]
    with pytest.raises(ValueError, match=r"\(8, 8, 8\).*\(3, 3, 3\)"):
        bench._coarse_mask(mask, (3, 3, 3))


def test_masked_error_is_zero_for_an_exact_grid_rotation_of_an_irreps_field(float64_default):
    """A 90-degree rotation about the first axis of a 1x0e + 1x1e field: np.rot90 of the voxels, D(R) on the
    vector. The same field without D(R) is not zero (the vector part rotates)."""
    from nnunet_equivariant.testing import irreps_D

    irreps = o3.Irreps("1x0e + 1x1e")
    rng = np.random.default_rng(0)
    field = rng.standard_normal((4, 8, 8, 8))
    R = bench._rotation_x(np.pi / 2)
    D = irreps_D(irreps, torch.from_numpy(R)).numpy()
    rotated = np.einsum("ij,j...->i...", D, bench.rotate_x(field, np.pi / 2))
    assert np.allclose(bench.rotate_x(field[:1], np.pi / 2), np.rot90(field[:1], 1, (2, 3))), "exact on the grid"
    mask = np.zeros((16, 16, 16), dtype=bool)
    mask[6:10, 6:10, 6:10] = True  # the fine grid's band, pooled to 8^3
    assert bench.masked_error(field, rotated, np.pi / 2, irreps, mask) < 1e-12
    assert bench.masked_error(field, rotated, np.pi / 2, None, mask) > 0.1


def test_layer_hooks_name_the_same_layers_with_and_without_the_antialiasing_blur(float64_default):
    """... and with either pooling (the mean pooling is ``pool`` as the norm max is)."""
    names = {}
    for antialias, pooling in ((0.0, "norm_max"), (0.5, "norm_max"), (0.0, "mean")):
        torch.manual_seed(0)
        net = E3nnUNet(1, 3, 2, ["4x0e + 2x1e", "4x0e + 2x1e + 1x2e"], [1, 2], 1, 1,
                       spec=E3nnSpec(antialias=antialias, upsample_antialias=antialias, pooling=pooling)).eval()
        features, irreps = {}, {}
        bench._layer_hooks(net, features, irreps)
        with torch.no_grad():
            net(torch.randn(1, 1, 8, 8, 8))
        assert list(features) == list(irreps)[:len(features)] and set(features) == set(irreps)
        names[antialias if pooling == "norm_max" else pooling] = list(features)
    assert names["mean"] == names[0.0]
    assert names[0.0] == ["enc0.0:conv", "enc0.0:norm", "enc0.0:gate", "enc1.0:pool", "enc1.1:conv",
                          "enc1.1:norm", "enc1.1:gate", "dec0:up", "dec0.0:conv", "dec0.0:norm", "dec0.0:gate",
                          "logits"]
    assert [n for n in names[0.5] if n != "enc1.0:blur"] == names[0.0] and "enc1.0:blur" in names[0.5]


def test_anatomy_variants_are_the_trainers_specs():
    from nnunet_equivariant.training import e3nn as trainers

    assert bench.anatomy_spec("default") == trainers.nnUNetTrainerE3nn.spec
    assert bench.anatomy_spec("antialias").antialias == 0.5
    assert bench.anatomy_spec("paper").radial_basis == "smooth_finite"
    assert bench.anatomy_spec("k3").kernel_size == 3
    from nnunet_equivariant.training.offgrid_trainers import nnUNetTrainerE3nnCompact

    assert bench.anatomy_spec("compact") == nnUNetTrainerE3nnCompact.spec
    assert bench.anatomy_spec("shells_half").radial_basis == "gaussian_shells_half"
    assert bench.anatomy_spec("shells+mean_pool").pooling == "mean"
    assert bench.anatomy_spec("shells+aa_pool+up+mean_pool") == E3nnSpec(antialias=0.5, upsample_antialias=0.5,
                                                                         pooling="mean")
    with pytest.raises(ValueError, match="'bessel'"):
        bench.anatomy_spec("bessel")


def test_anatomy_case_is_exact_under_a_grid_rotation_and_holds_the_thin_structures(tmp_path):
    """A label map in the on-disk format of the ``anatomy`` extra (generated: tests/aseg_files.py): the
    90-degree pose is ``np.rot90`` of the 0-degree one (image and labels; no noise or bias field to differ),
    every thin structure is in view, the image is z-scored."""
    from aseg_files import write_atlases

    from nnunet_equivariant.real_anatomy import LABELS

    folder = write_atlases(tmp_path)
    (image0, labels0), (image90, labels90) = (bench.anatomy_case(t, n=24, spacing=1.0, source="TplLIA-rh",
                                                                 folder=folder) for t in (0.0, np.pi / 2))
    assert image0.shape == (1, 24, 24, 24) and image0.dtype == np.float64
    assert abs(image0.mean()) < 1e-9 and abs(image0.std() - 1) < 1e-9, "z-scored"
    assert np.array_equal(np.rot90(labels0, 1, (1, 2)), labels90)
    assert np.allclose(np.rot90(image0, 1, (2, 3)), image90, atol=1e-6)
    assert all((labels0 == LABELS[name]).sum() > 5 for name in bench.THIN_STRUCTURES)
    with pytest.raises(ValueError, match="'nowhere-lh'"):
        bench.anatomy_case(0.0, source="nowhere-lh", folder=folder)


def test_trained_network_is_the_model_folders_network_with_its_weights(tmp_path, float64_default):
    """``--weights default=FOLDER``: the default's network on the folder's 3d_fullres plans with fold 0's
    final weights (the same logits as the network that was saved); a folder without them is named."""
    import json

    from nnunet_equivariant.networks.e3nn_spec import COMPACT_SPEC
    from nnunet_equivariant.networks.e3nn_unet import e3nn_unet_from_plans
    from nnunet_equivariant.testing import plans_configuration

    configuration = plans_configuration([[1, 1, 1], [2, 2, 2], [2, 2, 2]], None, [8, 16, 16],
                                        patch_size=[16, 16, 16], spacing=[3.0, 3.0, 3.0])
    folder = tmp_path / "nnUNetTrainerE3nn__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps({"configurations": {"3d_fullres": configuration.configuration}}))
    torch.manual_seed(1)
    saved = e3nn_unet_from_plans(configuration, COMPACT_SPEC, 1, 8, deep_supervision=True).double()
    torch.save({"network_weights": saved.state_dict()}, folder / "fold_0" / "checkpoint_final.pth")

    torch.manual_seed(2)  # other initial weights: only the loaded ones may decide the output
    loaded = bench.trained_network("default", folder, 8).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        expected = saved.eval()(x)[0]
        assert torch.allclose(loaded(x), expected, atol=1e-12)
    with pytest.raises(ValueError, match="empty.*checkpoint_final"):
        bench.trained_network("default", tmp_path / "empty", 8)
