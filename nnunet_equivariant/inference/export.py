"""Export a trained network as a self-contained ``torch.export`` program: kernels assembled, no e3nn needed.

At inference a steerable network is plain 3D convolutions plus gates, norms, pools and upsampling: every
``SteerableConv3d`` kernel is a fixed linear combination of its basis, and every mirror-symmetric kernel
a fixed expansion of its free half. ``assemble_network`` replaces those layers by ``nn.Conv3d`` /
``nn.ConvTranspose3d`` holding the assembled kernels (read through the layers' public ``build_kernel()`` /
``symmetric_weight``), and ``export_model`` traces the result with ``torch.export`` into a ``.pt2`` file.

Why ``torch.export``: the file is an ATen-op graph plus weights that ``torch.export.load`` runs with torch
alone (no e3nn, no nnunet_equivariant, no nnU-Net), it is PyTorch's supported export path (TorchScript is
deprecated; ``torch.jit.script`` cannot script e3nn's modules anyway), and the same file feeds
AOTInductor (``torch._inductor.aoti_compile_and_package``) or ``torch.onnx.export`` for other runtimes.
ONNX directly would add the ``onnx``/``onnxruntime`` packages, which this project does not install.

The program takes one fixed-size patch, the configuration's patch size, as nnU-Net's sliding window feeds
it: ``(batch, input_channels, *patch_size)`` -> logits ``(batch, num_classes, *patch_size)`` (no deep
supervision), batch size free. The plans' patch size, spacing, labels, the checkpoint's test-time mirroring
axes and the trainer's symmetry are stored beside the graph (``extra_files["nnunet_equivariant.json"]``);
normalisation, resampling and the sliding window stay the user's (or nnU-Net's) job.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..io import atomic_file, check_target
from ..layers import SteerableConv3d
from ..layers.mirror_conv import MirrorSymmetricConv3d, MirrorSymmetricConvTranspose3d

__all__ = ["assemble_network", "export_model", "load_exported", "ExportReport", "METADATA_NAME"]

#: Name of the JSON metadata stored in the ``.pt2`` file's ``extra_files``.
METADATA_NAME = "nnunet_equivariant.json"


def _steerable_as_conv(layer: SteerableConv3d) -> nn.Conv3d:
    kernel = layer.build_kernel().detach()
    conv = nn.Conv3d(kernel.shape[1], kernel.shape[0], tuple(kernel.shape[2:]), padding=layer.padding,
                     bias=layer.bias is not None, device=kernel.device, dtype=kernel.dtype)
    conv.weight.data.copy_(kernel)
    if layer.bias is not None:
        # the response to a zero input (a single voxel, so padding sees zeros too) is the full per-channel
        # bias (zero on non-scalar channels), whichever way the layer computes its convolution
        zero = kernel.new_zeros(1, kernel.shape[1], 1, 1, 1)
        conv.bias.data.copy_(layer(zero).flatten())
    return conv


def _mirror_as_plain(layer: nn.Module) -> nn.Module:
    weight = layer.symmetric_weight.detach()
    plain_type = nn.ConvTranspose3d if isinstance(layer, MirrorSymmetricConvTranspose3d) else nn.Conv3d
    kwargs = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                  bias=layer.bias is not None, padding_mode=layer.padding_mode, device=weight.device,
                  dtype=weight.dtype)
    if plain_type is nn.ConvTranspose3d:
        kwargs["output_padding"] = layer.output_padding
    plain = plain_type(layer.in_channels, layer.out_channels, layer.kernel_size, **kwargs)
    plain.weight.data.copy_(weight)
    if layer.bias is not None:
        plain.bias.data.copy_(layer.bias.detach())
    return plain


def assemble_network(network: nn.Module) -> nn.Module:
    """A copy of ``network`` (eval mode) whose steerable and mirror-symmetric convolutions are plain
    ``nn.Conv3d`` / ``nn.ConvTranspose3d`` with the assembled kernels. Same function, no kernel basis."""
    network = copy.deepcopy(network).eval()
    with torch.no_grad():
        for parent in list(network.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, SteerableConv3d):
                    setattr(parent, name, _steerable_as_conv(child))
                elif isinstance(child, (MirrorSymmetricConv3d, MirrorSymmetricConvTranspose3d)):
                    setattr(parent, name, _mirror_as_plain(child))
    return network


@dataclass(frozen=True)
class ExportReport:
    path: Path
    metadata: dict
    float64_assembly_error: float  # relative: assembled network vs the trained one, both float64
    float64_export_error: float  # relative: the traced program (float64 copy) vs the trained network
    max_abs_difference: float  # float32: exported program vs the trained network on a random patch
    max_abs_logit: float
    segmentation_agreement: float  # float32: fraction of voxels where both give the same class

    def summary(self) -> str:
        m = self.metadata
        return (f"{self.path}: {m['trainer_name']} fold {m['fold']}, input (batch, {m['input_channels']}, "
                f"{', '.join(map(str, m['patch_size']))}) -> logits of {m['num_classes']} classes; float64: "
                f"kernels assembled and program traced exactly (relative difference "
                f"{self.float64_assembly_error:.1g} and {self.float64_export_error:.1g}); float32 on a random "
                f"patch: max |difference| {self.max_abs_difference:.2g} (max |logit| {self.max_abs_logit:.2g}), "
                f"same class in {100 * self.segmentation_agreement:.2f} % of the voxels")


def export_model(model_folder: str | os.PathLike, output: str | os.PathLike, fold: str | int = 0,
                 checkpoint_name: str = "checkpoint_final.pth", overwrite: bool = False,
                 min_agreement: float = 0.95) -> ExportReport:
    """Export fold ``fold`` of a trained nnU-Net model folder (``nnUNet_results/DatasetX/Trainer__Plans__
    config``) to ``output`` (``.pt2``), written atomically; ``FileExistsError`` unless ``overwrite``.

    Checks against the trained network (as nnU-Net's predictor builds it) on a random patch, else
    ``RuntimeError`` and nothing written:

    1. float64: the assembled network (plain convolutions) and the ``torch.export`` program traced from a
       float64 copy of it give the trained network's logits to 1e-9 of the largest logit: the kernels are
       assembled exactly and the traced graph computes the same function. The float32 program written is
       the same trace of the float32 network.
    2. float32: the written program and the trained network give the same class in at least
       ``min_agreement`` of the voxels. Their logits are not compared to a tolerance: the program is traced op
       by op where the eager network fuses some (norm and gate), so float32 rounding differs, and the
       network itself is discontinuous where norm max-pooling selects between vectors of near-equal norm,
       so a rounding difference there switches the selected vector. Measured on tiny trained E3nnUNets whose
       float64 checks gave 1e-16: max |difference| from 1e-6 to 1.2e-2 of the largest logit, by training run.
       The largest difference is reported.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    model_folder, output = Path(model_folder), Path(output)
    if not (model_folder / "plans.json").is_file():
        raise FileNotFoundError(f"{model_folder} is not a trained nnU-Net model folder (no plans.json)")
    fold = fold if fold == "all" else int(fold)
    if not (model_folder / f"fold_{fold}" / checkpoint_name).is_file():
        raise FileNotFoundError(f"no checkpoint {model_folder / f'fold_{fold}' / checkpoint_name}")
    check_target(output, overwrite)

    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), (fold,), checkpoint_name)
    network = predictor.network.float().eval()
    patch_size = [int(s) for s in predictor.configuration_manager.patch_size]
    input_channels = _input_channels(predictor)

    example = torch.randn(2, input_channels, *patch_size, generator=torch.Generator().manual_seed(0))
    assembly_error, export_error = _float64_errors(network, example[:1])
    for what, error in (("assembled network", assembly_error), ("traced program", export_error)):
        if not error <= 1e-9:
            raise RuntimeError(f"{what} differs from the trained network in float64 by {error:.3g} of the "
                               f"largest logit; not written")
    program = _export(assemble_network(network), example)
    with torch.no_grad():
        reference = network(example)
        exported = program.module()(example)
    difference = float((exported - reference).abs().max())
    scale = float(reference.abs().max())
    agreement = float((exported.argmax(1) == reference.argmax(1)).double().mean())
    if not agreement >= min_agreement:  # also catches NaN logits
        raise RuntimeError(f"exported program (float32) gives the trained network's class in only "
                           f"{100 * agreement:.2f} % of the voxels (max |difference| {difference:.3g}, max logit "
                           f"{scale:.3g}); not written")

    from . import rotation_tta

    metadata = {
        "format": "nnunet_equivariant.export/1",
        "trainer_name": predictor.trainer_name,
        "symmetry": rotation_tta.trainer_symmetry(predictor.trainer_name).name,
        # the steerable network's recipe (E3nnSpec fields), None for networks without one
        "spec": network.spec.to_dict() if hasattr(network, "spec") else None,
        "fold": fold,
        "checkpoint": checkpoint_name,
        "input_channels": input_channels,
        "num_classes": int(reference.shape[1]),
        "patch_size": patch_size,
        "spacing": [float(s) for s in predictor.configuration_manager.spacing],
        "inference_allowed_mirroring_axes": None if predictor.allowed_mirroring_axes is None
        else [int(a) for a in predictor.allowed_mirroring_axes],
        "labels": predictor.dataset_json.get("labels"),
        "channel_names": predictor.dataset_json.get("channel_names"),
        "laterality": predictor.dataset_json.get("laterality"),  # laterality mode: how to split by side
        "torch_version": torch.__version__,
    }
    with atomic_file(output, overwrite) as tmp, open(tmp, "wb") as f:  # a buffer: any file ending is accepted
        torch.export.save(program, f, extra_files={METADATA_NAME: json.dumps(metadata, indent=2)})
    return ExportReport(output, metadata, assembly_error, export_error, difference, scale, agreement)


def _export(network: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``network`` traced for ``example``'s shape with a free batch size."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad():
        return torch.export.export(network, (example,), dynamic_shapes=({0: batch},))


def _float64_errors(network: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Largest |assembled - trained| and |traced program - trained| logit difference over the largest logit,
    all in float64 (an exported program keeps its dtype: the float64 one is traced from a float64 copy, for
    ``x``'s batch size: the batch dimension is free in the program written, the graph the same)."""
    network64 = copy.deepcopy(network).double().eval()
    assembled = assemble_network(network64)
    x = x.double()
    with torch.no_grad():
        reference = network64(x)
        errors = [(out - reference).abs().max() / reference.abs().max()
                  for out in (assembled(x), torch.export.export(assembled, (x,)).module()(x))]
    return float(errors[0]), float(errors[1])


def _input_channels(predictor) -> int:
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    return int(determine_num_input_channels(predictor.plans_manager, predictor.configuration_manager,
                                            predictor.dataset_json))


def load_exported(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """``(module, metadata)`` of an exported ``.pt2`` file; ``module(patch)`` gives logits. Needs only torch
    (this function is a convenience: the README shows the two lines it runs)."""
    extra = {METADATA_NAME: ""}
    program = torch.export.load(os.fspath(path), extra_files=extra)
    return program.module(), json.loads(extra[METADATA_NAME])
