"""DDP as nnU-Net sets it up (compiled or not, broadcast_buffers=True) skips our constant buffers and
still trains: a one-process gloo group on the CPU."""
import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunet_equivariant.networks import E3nnSpec, E3nnUNet, MirrorUNet


@pytest.fixture
def process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _e3nn():
    return E3nnUNet(1, 3, 2, [8, 16], 2, 1, 1, deep_supervision=True, spec=E3nnSpec(kernel_size=3))


def _mirror():
    return MirrorUNet(1, 2, [4, 8], torch.nn.Conv3d, 3, [1, 2], 1, 3, 1, norm_op=torch.nn.InstanceNorm3d,
                      nonlin=torch.nn.LeakyReLU, deep_supervision=True)


@pytest.mark.parametrize("build", [_e3nn, _mirror], ids=["E3nnUNet", "MirrorUNet"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_ddp_broadcasts_no_constant_buffer(process_group, build, compiled):
    network = build()
    buffers = dict(network.named_buffers())
    assert buffers and set(network._ddp_params_and_buffers_to_ignore) >= set(buffers), \
        "every buffer of these networks is a constant of the architecture"
    module = torch.compile(network) if compiled else network  # nnU-Net compiles before wrapping (not run here)
    ddp = DDP(module)
    assert ddp.modules_buffers == [], "nothing left to broadcast before each forward"
    assert len(ddp._module_parameters) == len(list(network.parameters())), "every parameter still all-reduced"


def test_ddp_training_step_matches_plain_step(process_group):
    torch.manual_seed(0)
    network = _e3nn()
    reference = _e3nn()
    reference.load_state_dict(network.state_dict())
    x = torch.randn(2, 1, 8, 8, 8)
    ddp = DDP(network)
    for model in (ddp, reference):
        model.train()
        sum(o.square().mean() for o in model(x)).backward()
    for (name, p), q in zip(network.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


# --- nnU-Net's own DDP trainer, as `nnUNetv2_train ... -num_gpus 2` runs it, on the CPU -----------------

WORLD_SIZE = 2
DDP_STEPS = 3


def _ddp_worker(rank: int, store: str, work: str, trainer_name: str):
    """One rank of `-num_gpus 2`: the process group as nnU-Net's run_ddp sets it (gloo instead of nccl), then
    nnU-Net's trainer constructed inside it (is_ddp, its batch share, the network compiled, then wrapped in
    DDP by its own initialize) and DDP_STEPS of its train_step on this rank's own batches."""
    from pathlib import Path

    from nnunet_equivariant.training import e3nn, mirror
    from nnunet_equivariant.training.standalone import standalone_trainer, synthetic_batch, unwrap

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(100 + rank)  # different initial weights per rank: DDP broadcasts rank 0's
        cls = getattr(e3nn, trainer_name, None) or getattr(mirror, trainer_name)
        configuration = _tiny_configuration()
        trainer = standalone_trainer(cls, configuration, Path(work) / f"rank{rank}", compile=True)
        assert trainer.is_ddp and trainer.local_rank == rank and trainer.batch_size == 2
        assert isinstance(trainer.network, DDP) and isinstance(trainer.network.module, torch._dynamo.eval_frame.OptimizedModule)
        initial = {k: v.clone() for k, v in unwrap(trainer.network).state_dict().items()}
        losses = []
        for step in range(DDP_STEPS):
            trainer.network.train()
            losses.append(float(trainer.train_step(synthetic_batch(trainer, seed=10 * step + rank))["loss"]))
        torch.save({"losses": losses, "initial": initial, "state": unwrap(trainer.network).state_dict()}, Path(work) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _tiny_configuration() -> dict:
    from nnunet_equivariant.testing import plans_configuration

    configuration = plans_configuration([[1, 1, 1], [2, 2, 2], [2, 2, 2]], None, [8, 16, 16], n_conv=1,
                                        patch_size=[8] * 3, spacing=[1.0, 1.0, 1.0]).configuration
    configuration["batch_size"] = 2 * WORLD_SIZE  # nnU-Net splits the plans' batch over the ranks
    return configuration


@pytest.mark.parametrize("trainer_name", ["nnUNetTrainerE3nn", "nnUNetTrainerMirror"])
def test_nnunet_ddp_trainer_keeps_ranks_identical(tmp_path, trainer_name):
    """Two processes (gloo), nnU-Net's DDP trainer with the compiled network inside: after the steps on
    different data every rank holds the same weights, and they moved from the start."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(tmp_path / "store"), str(tmp_path), trainer_name), nprocs=WORLD_SIZE,
             join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    assert results[0]["losses"] != results[1]["losses"], "each rank trained on its own batches"
    state0, state1 = results[0]["state"], results[1]["state"]
    assert state0.keys() == state1.keys()
    for key in state0:
        assert torch.equal(state0[key], state1[key]), f"{key} differs between the ranks"
    for key in state0:
        assert torch.equal(results[0]["initial"][key], results[1]["initial"][key]), \
            f"{key}: DDP started every rank from rank 0's weights (the ranks were seeded differently)"
    moved = [k for k in state0 if not torch.equal(state0[k], results[0]["initial"][k])]
    assert moved, "the steps changed the weights"
