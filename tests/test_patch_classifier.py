"""The paper's patch classifiers: Tables I and II exactly, flip invariance, the width-matching helper."""
import pytest
import torch

from nnunet_equivariant.layers import SYMMETRIES, MirrorSymmetricConv3d, symmetry_axes
from nnunet_equivariant.networks import build_patch_classifier
from nnunet_equivariant.networks.parameter_matching import count_parameters, match_widths
from nnunet_equivariant.networks.patch_classifier import (
    PAPER_KERNEL_COUNTS,
    PatchClassifier,
    keep_parameter_widths,
    parse_architecture,
)
from nnunet_equivariant.symmetry import flip_matrix, transform_volume

ARCHS = ("K16S16", "K4S4-K4S4", "K8S1-K8S1-K2S1")

# Table II of the paper (c = 2): parameters for base, f*, f**, f***.
TABLE_II = {
    ("keep_parameters", "K16S16"): (707_362, 706_614, 707_617, 707_318),
    ("keep_parameters", "K4S4-K4S4"): (711_522, 711_853, 710_386, 710_695),
    ("keep_parameters", "K8S1-K8S1-K2S1"): (735_217, 735_993, 735_967, 735_474),
    ("keep_architecture", "K16S16"): (707_362, 379_682, 215_842, 133_922),
    ("keep_architecture", "K4S4-K4S4"): (711_522, 381_794, 216_930, 134_498),
    ("keep_architecture", "K8S1-K8S1-K2S1"): (735_217, 388_817, 215_617, 129_017),
}
# Table I (keep the number of parameters): kernels per convolution, then the MLP 160, 160, c.
TABLE_I = {
    "K16S16": ((160,), (308,), (575,), (1012,)),
    "K4S4-K4S4": ((64, 160), (80, 251), (132, 300), (225, 348)),
    "K8S1-K8S1-K2S1": ((25, 50, 100), (35, 71, 145), (50, 100, 175), (73, 140, 167)),
}


def kernel_counts(model):
    return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv3d)]


@pytest.mark.parametrize("task, arch", sorted(TABLE_II))
def test_tables_I_and_II_are_reproduced_for_every_symmetry(task, arch):
    for symmetry in SYMMETRIES:
        n_axes = len(symmetry_axes(symmetry))
        with torch.device("meta"):
            model = build_patch_classifier(arch, symmetry, task, num_classes=2)
        assert sum(p.numel() for p in model.parameters()) == TABLE_II[task, arch][n_axes], \
            f"Table II parameter count of {arch} {symmetry} {task}"
        convs = TABLE_I[arch][n_axes] if task == "keep_parameters" else TABLE_I[arch][0]
        assert kernel_counts(model) == [*convs, 160, 160, 2], f"Table I kernel counts of {arch} {symmetry} {task}"
        assert all(m.symmetry == symmetry for m in model.modules() if isinstance(m, MirrorSymmetricConv3d))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("symmetry", ["f2", "f13", "f123"])
def test_scores_are_invariant_to_flips_along_the_symmetric_axes(arch, symmetry):
    torch.manual_seed(0)
    model = build_patch_classifier(arch, symmetry, "keep_architecture", num_classes=3).double()
    x = torch.randn(4, 1, 16, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        logits = model.logits(x)
        assert logits.shape == (4, 3)
        scores = model(x)
        assert ((scores > 0) & (scores < 1)).all(), "sigmoid scores"
        axes = symmetry_axes(symmetry)
        for a in range(3):
            flipped = model.logits(transform_volume(x, flip_matrix([a])))
            err = ((flipped - logits).norm() / logits.norm()).item()
            if a in axes:
                assert err < 1e-12, f"scores are invariant to a flip of symmetric axis {a}"
            else:
                assert err > 1e-6, f"a flip of free axis {a} changes the scores of a random model"


def test_width_helper_reproduces_table_I_for_one_layer_and_the_paper_tolerance_otherwise():
    for arch in ARCHS:
        base = PAPER_KERNEL_COUNTS[arch]["base"]
        target = TABLE_II["keep_parameters", arch][0]
        paper_spread = max(abs(n - target) for n in TABLE_II["keep_parameters", arch][1:]) / target
        for symmetry in ("f3", "f12", "f123"):
            widths = keep_parameter_widths(arch, base, symmetry)
            layers = parse_architecture(arch)
            count = count_parameters(lambda a=layers, w=widths, s=symmetry: PatchClassifier(a, w, s))
            assert abs(count - target) / target <= paper_spread, \
                f"{arch} {symmetry}: {widths} gives {count}, as close to the baseline as the paper's models"
            if arch == "K16S16":
                assert widths == TABLE_I[arch][len(symmetry) - 1], "one convolution: Table I exactly"


def test_match_widths_keeps_proportions():
    widths = match_widths((10, 20, 40), lambda w: sum(w) ** 2, 4900 * 4)  # sum must reach 140 = 2 x 70
    assert widths == (20, 40, 80)
    with pytest.raises(ValueError, match="below"):
        match_widths((1, 2), lambda w: sum(w) + 100, 50)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="'K3S3'"):
        build_patch_classifier("K3S3")
    with pytest.raises(ValueError, match="'keep_flops'"):
        build_patch_classifier("K16S16", task="keep_flops")
    with pytest.raises(ValueError, match="'f0'"):
        build_patch_classifier("K16S16", symmetry="f0")
    with pytest.raises(ValueError, match="K<kernel>S<stride>"):
        parse_architecture("K4-S4")
    with pytest.raises(ValueError, match="tile"):
        PatchClassifier(parse_architecture("K3S2"), (8,))
    model = build_patch_classifier("K4S4-K4S4", "f1")
    with pytest.raises(ValueError, match=r"\(batch, 1, 16, 16, 16\)"):
        model(torch.zeros(2, 1, 17, 16, 16))
