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
