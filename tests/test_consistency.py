"""Off-grid consistency loss: the rotation grids are physical rotations (float64: a linear field is
resampled exactly at any angle and spacing, 90 degrees is a voxel permutation), the term vanishes for a
grid-exact network at the grid angles and not for stock nnU-Net, and the trainer adds it to nnU-Net's
loss with gradients while validation keeps nnU-Net's loss."""
import copy

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from scipy.spatial.transform import Rotation

from nnunet_equivariant.networks import E3nnSpec, E3nnUNet
from nnunet_equivariant.testing import plans_configuration
from nnunet_equivariant.training.consistency import consistency_term, resample, rotation_grid
from nnunet_equivariant.training.offgrid_trainers import nnUNetTrainerE3nnConsistency
from nnunet_equivariant.training.standalone import standalone_trainer, synthetic_batch, unwrap


def _axis_rotation(axis: int, angle: float) -> np.ndarray:
    return Rotation.from_rotvec(angle * np.eye(3)[axis]).as_matrix()


@pytest.mark.parametrize("spacing, axis", [((1.0, 1.0, 1.0), 2), ((1.0, 1.0, 3.0), 0), ((2.0, 1.0, 1.0), 1)])
def test_rotation_grid_resamples_a_linear_field_exactly_at_any_angle(float64_default, spacing, axis):
    """Trilinear interpolation reproduces linear functions, so the resampled field of ``a . S (q - c)`` is
    exactly ``a . R^T S (p - c)`` at every valid voxel: the grid is the physical rotation about the centre."""
    shape = (9, 8, 7)
    rng = np.random.default_rng(axis)
    a, angle = rng.normal(size=3), rng.uniform(-np.pi / 4, np.pi / 4)
    R = _axis_rotation(axis, angle)
    centre = (np.asarray(shape) - 1) / 2
    p = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1) - centre
    physical = p * np.asarray(spacing)
    field = torch.as_tensor(physical @ a)[None, None]
    grid, valid = rotation_grid(shape, spacing, R[None], dtype=torch.float64)
    out = resample(field, grid)[0, 0].numpy()
    expected = physical @ R @ a  # a . R^T u
    assert 0.3 < valid.float().mean() < 1, "an off-grid rotation leaves corners without a source"
    np.testing.assert_allclose(out[valid[0].numpy()], expected[valid[0].numpy()], atol=1e-12)


@pytest.mark.parametrize("axis, dims", [(0, (3, 4)), (1, (4, 2)), (2, (2, 3))])
def test_rotation_grid_at_90_degrees_is_a_voxel_permutation(float64_default, axis, dims):
    x = torch.randn(2, 3, 6, 6, 6)
    grid, valid = rotation_grid((6, 6, 6), (1.5, 1.5, 1.5), np.stack([_axis_rotation(axis, np.pi / 2)] * 2),
                                dtype=torch.float64)
    assert bool(valid.all())
    torch.testing.assert_close(resample(x, grid), torch.rot90(x, 1, dims), atol=1e-12, rtol=0)


def _e3nn_net():
    features = ["1x0e + 1x1e + 1x2e", "2x0e + 1x1e + 1x2e", "2x0e + 2x1e + 1x2e"]
    net = E3nnUNet(input_channels=1, num_classes=3, n_stages=3, features_per_stage=features,
                   strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=1, n_conv_per_stage_decoder=1,
                   deep_supervision=False, spacing=(1.0, 1.0, 1.0), spec=E3nnSpec())
    net.apply(net.initialize)
    return net.eval()


def _stock_net():
    net = PlainConvUNet(1, 3, [8, 16, 16], torch.nn.Conv3d, 3, [1, 2, 2], 1, 3, 1, conv_bias=True,
                        norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
                        nonlin=torch.nn.LeakyReLU, deep_supervision=False)
    return net.eval()


def _term(net, x, rotations):
    grid, valid = rotation_grid(x.shape[2:], (1.0, 1.0, 1.0), rotations, dtype=x.dtype)
    with torch.no_grad():
        return float(consistency_term(torch.softmax(net(resample(x, grid)), 1), torch.softmax(net(x), 1), grid, valid))


def test_term_vanishes_for_a_grid_exact_network_at_the_grid_angles_only(float64_default):
    """At 90 degrees about each axis the steerable network's term is float64 rounding, stock nnU-Net's is
    not; at 30 degrees neither network commutes with the rotation exactly."""
    x = torch.randn(3, 1, 16, 16, 16)
    quarter = np.stack([_axis_rotation(axis, np.pi / 2) for axis in range(3)])
    e3nn, stock = _e3nn_net(), _stock_net()
    assert _term(e3nn, x, quarter) < 1e-20
    assert _term(stock, x, quarter) > 1e-6
    assert _term(e3nn, x, np.stack([_axis_rotation(2, np.pi / 6)] * 3)) > 1e-12


def test_drawn_rotations_are_within_45_degrees_about_one_axis(trainers):
    np.random.seed(0)
    rotations = Rotation.from_matrix(trainers[0]._draw_rotations(200)).as_rotvec()
    assert np.all(np.count_nonzero(np.abs(rotations) > 1e-12, axis=1) == 1), "one axis each"
    assert np.abs(rotations).max() <= np.pi / 4 + 1e-12
    assert set(np.argmax(np.abs(rotations), axis=1)) == {0, 1, 2}


def test_rejects_bad_grids():
    with pytest.raises(ValueError, match="spacing"):
        rotation_grid((8, 8, 8), (1.0, 0.0, 1.0), np.eye(3)[None])
    with pytest.raises(ValueError, match=r"\(k, 3, 3\)"):
        rotation_grid((8, 8, 8), (1.0, 1.0, 1.0), np.eye(3))
    with pytest.raises(ValueError, match="shape"):
        rotation_grid((8, 8), (1.0, 1.0, 1.0), np.eye(3)[None])


def _tiny_configuration() -> dict:
    return plans_configuration([[1, 1, 1], [2, 2, 2], [2, 2, 2]], None, [8, 16, 16], n_conv=1,
                               patch_size=[12, 12, 12], spacing=[1.0, 1.0, 1.0]).configuration


@pytest.fixture(scope="module")
def trainers(tmp_path_factory):
    """Two consistency trainers with the same initial weights: weight 1 and weight 0."""
    out = []
    for weight in (1.0, 0.0):
        cls = type(f"Consistency{int(weight)}", (nnUNetTrainerE3nnConsistency,), {"consistency_weight": weight})
        cls.__module__ = nnUNetTrainerE3nnConsistency.__module__
        torch.manual_seed(0)
        out.append(standalone_trainer(cls, _tiny_configuration(), tmp_path_factory.mktemp(f"w{weight:g}"),
                                      compile=False))
    return out


def test_train_step_adds_the_weighted_term_with_gradients(trainers):
    with_term, without = trainers
    batch = synthetic_batch(with_term, seed=1)
    initial = copy.deepcopy(unwrap(with_term.network))
    # the rotation the step will draw
    np.random.seed(5)
    rotations = with_term._draw_rotations(1)
    grid, valid = rotation_grid(batch["data"].shape[2:], (1.0, 1.0, 1.0), rotations)
    initial.train()
    output = initial(torch.cat([batch["data"], resample(batch["data"][:1], grid)]))
    supervised = float(with_term.loss.loss([o[:-1] for o in output], batch["target"]))
    probabilities = torch.softmax(output[0], 1)
    term = float(consistency_term(probabilities[-1:], probabilities[:1], grid, valid))
    assert term > 1e-4, "an untrained network is far from consistent off the grid"

    steps = {}
    for trainer in trainers:
        trainer.network.train()
        np.random.seed(5)
        steps[trainer.consistency_weight] = float(trainer.train_step(batch)["loss"])
    assert steps[1.0] == pytest.approx(supervised + term, rel=1e-5)
    assert steps[0.0] == pytest.approx(supervised, rel=1e-5), "weight 0: nnU-Net's own step"
    moved = [(a - b).abs().max() for a, b in zip(unwrap(with_term.network).parameters(),
                                                 unwrap(without.network).parameters())]
    assert max(moved) > 1e-6, "the term's gradients reach the weights"


def test_validation_keeps_nnunets_loss(trainers):
    trainer = trainers[0]
    batch = synthetic_batch(trainer, seed=2)
    trainer.network.eval()
    with torch.no_grad():
        output = trainer.network(batch["data"])
        assert float(trainer.loss(output, batch["target"])) == float(trainer.loss.loss(output, batch["target"]))
    assert trainer._consistency_pending is None


def test_bad_settings_are_refused(trainers):
    trainer = trainers[0]
    trainer.consistency_weight = -1.0
    try:
        with pytest.raises(ValueError, match="consistency_weight"):
            trainer._build_loss()
    finally:
        trainer.consistency_weight = 1.0
    with pytest.raises(ValueError, match="3D patches"):
        trainer.train_step({"data": torch.zeros(2, 1, 12, 12), "target": []})
