"""The GPU path as nnU-Net runs it, proven on the CPU (issue 18): the networks this package builds from
plans, built by their trainers and set up by nnU-Net's own ``initialize`` (``torch.compile`` with the
default inductor backend, optimiser, deep-supervision loss with its compiled Dice), take a training step
through nnU-Net's own ``train_step`` that matches the eager step; have no graph break; and the compiled
eval forward uses the weights loaded after compilation (the predictor loads each fold into one network).

Inductor compiles C++ on the CPU, one gcc run per fused kernel: a 3-stage network with one unit of irreps
per stage took 306 s (train step) + 364 s (eval forward) on this 2-core machine under load, ~1/5 of that
idle (benchmarks/gpu_check.py prints compile times). So, to keep the suite under its budget:

- ``EXPLAINED`` (every trainer's network, and every network this package builds from plans): dynamo traces
  the training and the eval forward in one graph each (``torch._dynamo.explain``, no code generation);
- ``COMPILED`` (SO(3) gates, O(3) parities, mirror convolutions, and the steerable and mirror residual
  encoders from ResEnc plans): the full inductor training step against the eager one; the variants left out differ from one of these in sizes, irreps multiplicities, basis
  buffers' values or an added blur (a depthwise convolution), which dynamo traces in ``EXPLAINED``;
  ``benchmarks/gpu_check.py`` compiles the stock, E3nn, lean and mirror trainers with inductor;
- ``EVAL_COMPILED`` (one per convolution kind with a kernel cache): the compiled eval forward after
  ``load_state_dict``.

The residual-encoder networks (the same trainers on ResEnc plans) are traced in ``test_no_graph_break_on_resenc_plans``. Sizes are minimal (3 stages: nnU-Net's
deep-supervision loss drops the lowest output; 8 / 16 / 16 features = one unit of irreps; 8^3 patches).
"""
from __future__ import annotations

import copy

import pytest
import torch

from nnunet_equivariant.testing import plans_configuration
from nnunet_equivariant.training import e3nn, mirror
from nnunet_equivariant.training.standalone import standalone_trainer, synthetic_batch, unwrap

EXPLAINED = {name: getattr(module, name) for module in (e3nn, mirror) for name in module.__all__}
# "TRAINER/ResEnc": the trainer's residual-encoder network, built from ResidualEncoderUNet plans
COMPILED = ["nnUNetTrainerE3nn", "nnUNetTrainerE3nnO3", "nnUNetTrainerMirror",
            "nnUNetTrainerE3nn/ResEnc", "nnUNetTrainerMirror/ResEnc"]
EVAL_COMPILED = ["nnUNetTrainerE3nn", "nnUNetTrainerMirror"]


def tiny_configuration(patch: int = 8, residual: bool = False) -> dict:
    """3 stages (nnU-Net's deep-supervision loss needs 3: it drops the lowest output), 8 / 16 / 16 features
    (one unit of irreps per stage), isotropic 1 mm; ``residual``: as nnU-Net's ResEnc planners write it
    (``ResidualEncoderUNet``, one residual block per stage: a projection on the skip path where the width
    changes, the identity where it does not)."""
    configuration = plans_configuration([[1, 1, 1], [2, 2, 2], [2, 2, 2]], None, [8, 16, 16], n_conv=1,
                                        patch_size=[patch] * 3, spacing=[1.0, 1.0, 1.0]).configuration
    if residual:
        architecture = configuration["architecture"]
        architecture["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
        architecture["arch_kwargs"]["n_blocks_per_stage"] = architecture["arch_kwargs"].pop("n_conv_per_stage")
    return configuration


def _grads(network):
    """Gradients by name; ``None`` where the loss does not reach a parameter (nnU-Net's deep-supervision
    loss gives the lowest output weight 0 and skips it: its segmentation head gets no gradient)."""
    return {name: None if p.grad is None else p.grad.detach().clone()
            for name, p in unwrap(network).named_parameters()}


_STEPPED: dict = {}


def _stepped(name: str, tmp_path_factory):
    """An eager and a compiled trainer with the same initial weights after one nnU-Net ``train_step`` on
    the same batch (built once per module): ``(name, eager, compiled, batch, losses, grads, initial_state)``."""
    if name not in _STEPPED:
        trainer_name, _, plans = name.partition("/")
        cls, configuration = EXPLAINED[trainer_name], tiny_configuration(residual=plans == "ResEnc")
        work = tmp_path_factory.mktemp(name.replace("/", "_"))
        torch.manual_seed(0)
        eager = standalone_trainer(cls, configuration, work / "eager", compile=False)
        compiled = standalone_trainer(cls, configuration, work / "compiled", compile=True)
        if plans == "ResEnc":
            assert "ResEnc" in type(unwrap(eager.network)).__name__, "the trainer built its residual network"
        assert isinstance(compiled.network, torch._dynamo.eval_frame.OptimizedModule), "nnU-Net compiled it"
        initial = copy.deepcopy(unwrap(eager.network).state_dict())
        unwrap(compiled.network).load_state_dict(initial)
        batch = synthetic_batch(eager, seed=1)
        losses, grads = {}, {}
        for key, trainer in (("eager", eager), ("compiled", compiled)):
            trainer.network.train()
            losses[key] = float(trainer.train_step(batch)["loss"])
            grads[key] = _grads(trainer.network)
        _STEPPED[name] = (name, eager, compiled, batch, losses, grads, initial)
    return _STEPPED[name]


@pytest.fixture(scope="module", autouse=True)
def _release():
    yield
    _STEPPED.clear()


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_train_step_matches_eager(name, tmp_path_factory):
    name, eager, compiled, batch, losses, grads, _ = _stepped(name, tmp_path_factory)
    assert losses["eager"] > 0.1, "an untrained network has a real loss to match"
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-5, abs=1e-6)
    assert grads["eager"].keys() == grads["compiled"].keys()
    largest = max(float(t.abs().max()) for t in grads["eager"].values() if t is not None)
    for key, g in grads["eager"].items():
        c = grads["compiled"][key]
        if g is None or c is None:
            # a parameter without a gradient in one of the two: one the loss skips (None in eager, zeros from a
            # compiled graph), or a bias right before an instance norm, whose true gradient is 0 (rounding
            # noise in one, None where the compiler proved it zero)
            assert all(t is None or float(t.abs().max()) <= 1e-6 * largest for t in (g, c)), \
                (key, [None if t is None else float(t.abs().max()) for t in (g, c)], largest)
            continue
        # absolute tolerance against the network's largest gradient: a bias right before an instance norm has
        # true gradient 0, and eager and compiled each leave their own rounding noise there
        torch.testing.assert_close(c, g, rtol=1e-4, atol=1e-5 * largest, msg=key)
    reached = [g for g in grads["eager"].values() if g is not None]
    assert sum(bool(g.any()) for g in reached) > len(grads["eager"]) / 2, "gradients reach the weights"
    # the optimiser stepped both (Adam / SGD as the trainer configures them): a second step still agrees
    second = {k: float(t.train_step(synthetic_batch(eager, seed=2))["loss"])
              for k, t in (("eager", eager), ("compiled", compiled))}
    assert second["compiled"] == pytest.approx(second["eager"], rel=1e-3)


@pytest.mark.parametrize("name", EXPLAINED)
def test_no_graph_break(name):
    # a fresh dynamo cache per network: the layers' forward code objects are shared by every network in this
    # process, and past torch._dynamo.config.cache_size_limit recompilations dynamo runs them eagerly (seen
    # as breaks in whichever trainer came ninth)
    torch._dynamo.reset()
    torch.manual_seed(0)
    network = EXPLAINED[name].build_network_architecture(None, plans_configuration(
        [[1, 1, 1], [2, 2, 2], [2, 2, 2]], None, [8, 16, 16], n_conv=1, patch_size=[8] * 3, spacing=[1.0] * 3),
        1, 3, True)
    _assert_traces_whole(network, torch.randn(2, 1, 8, 8, 8), name)


def _assert_traces_whole(network, x: torch.Tensor, label: str) -> None:
    """Dynamo traces the training and the no-grad eval forward in one graph each, with no break."""
    network.train()
    train = torch._dynamo.explain(network)(x)
    network.eval()
    with torch.no_grad():
        evaluation = torch._dynamo.explain(network)(x)
    for mode, explained in (("train", train), ("eval", evaluation)):
        assert explained.graph_break_count == 0 and explained.graph_count == 1, \
            f"{label} ({mode}): {explained.break_reasons}"


@pytest.mark.parametrize("name", EVAL_COMPILED)
def test_compiled_eval_uses_weights_loaded_after_compilation(name, tmp_path_factory):
    """As nnU-Net's predictor: one (compiled) network, each fold's weights loaded into it, then eval()."""
    name, eager, compiled, batch, _, _, initial = _stepped(name, tmp_path_factory)
    x = batch["data"][:1]
    fold_a = copy.deepcopy(unwrap(compiled.network).state_dict())  # after the training steps
    fold_b = initial
    reference = unwrap(eager.network)
    for trainer in (eager, compiled):
        trainer.set_deep_supervision_enabled(False)
    try:
        outputs = {}
        for fold, state in (("a", fold_a), ("b", fold_b), ("a again", fold_a)):
            unwrap(compiled.network).load_state_dict(state)
            compiled.network.eval()
            with torch.no_grad():
                outputs[fold] = compiled.network(x)
            reference.load_state_dict(state)
            reference.eval()
            with torch.no_grad():
                expected = reference(x)
            torch.testing.assert_close(outputs[fold], expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()),
                                       msg=f"{name}: fold {fold}")
        assert (outputs["a"] - outputs["b"]).abs().max() > 1e-3 * outputs["a"].abs().max(), \
            "the two folds' weights give different outputs (else the check proves nothing)"
    finally:
        for trainer in (eager, compiled):
            trainer.set_deep_supervision_enabled(True)
            trainer.network.train()


@pytest.mark.parametrize("name", ["nnUNetTrainerE3nn", "nnUNetTrainerE3nnO3", "nnUNetTrainerMirror"])
def test_no_graph_break_on_resenc_plans(name):
    """The residual-encoder networks the same trainers build from nnU-Net's ResEnc M plans (E3nnResEncUNet,
    MirrorResEncUNet) trace whole in training and eval as well."""
    from resenc_plans import resenc_configuration, with_features

    torch._dynamo.reset()
    torch.manual_seed(0)
    config = with_features(resenc_configuration("isotropic", "M", patch_size=[32] * 3), [8, 8, 16, 16, 16])
    network = EXPLAINED[name].build_network_architecture(None, config, 1, 3, True)
    assert "ResEnc" in type(network).__name__, "the trainer built its residual-encoder network"
    _assert_traces_whole(network, torch.randn(2, 1, 32, 32, 32), f"{name} on ResEnc plans")
