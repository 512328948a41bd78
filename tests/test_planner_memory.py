"""The planner's memory estimates of the networks it sizes plans for (the steerable networks and the
PlainConvUNet) are within 10 % of the measured peak of a training forward + backward pass, at three patch
sizes (CPU, float32; each measured in a fresh process by the benchmark script). docs/planner.md measures
0.99-1.01; 10 % leaves room for another allocator or torch version, not for a wrong formula."""
import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "planner_memory.py"
# 40^3: nnU-Net's residual network peaks late in backward (its parameters), 48^3 at the start of backward; the
# steerable one peaks late (its assembled kernels) at both. Measured as the constants were fit: each size after
# the smaller ones in one process (the first step in a process also pays for the libraries' and the allocator's
# start-up, ~20 MiB for the stock network: 0.88x at whichever size comes first), so 32^3 goes first, unchecked.
RESENC_SIZES = (40, 48)
RESENC_WARM_UP = 32


def test_estimate_within_10_percent_of_measured_peak(tmp_path):
    """The default steerable network (``nnUNetTrainerE3nn``'s: 3^3 kernels, so its start-of-backward peak of
    stored feature maps dominates), the paper's 5^3 network (its assembled kernels dominate late in backward)
    and the stock ``PlainConvUNet`` of the default plans (3^3), each at three sizes after a warm-up size: the
    first step in a process pays the libraries' start-up, 35-50 MiB, which at 24^3 is most of a 3^3 network's
    peak (0.41-0.53x there; docs/planner.md). The plans are sized at gigabytes, where it does not count."""
    out = tmp_path / "rows.json"
    networks = ("E3nnUNet", "nnUNetTrainerE3nnShells", "PlainConvUNet")
    subprocess.run([sys.executable, str(BENCHMARK), "--networks", *networks, "--stages", "4",
                    "--sizes", "32", "40", "48", "56", "--batch", "1", "--json", str(out)],
                   check=True, capture_output=True, text=True, timeout=900)
    rows = [r for r in json.loads(out.read_text()) if r["patch"] != 32]
    assert [(r["network"], r["patch"]) for r in rows] == [(n, p) for n in networks for p in (40, 48, 56)]
    for r in rows:
        assert r["measured"] > 50 * 2 ** 20, "the pass allocated real memory"
        ratio = r["estimate"] / r["measured"]
        assert 0.9 <= ratio <= 1.1, f"{r['network']}: estimate within 10 % at {r['patch']}^3: {ratio:.3f}"


def test_estimate_follows_each_steerable_variant_the_planner_sizes_for(tmp_path):
    """``plan_and_preprocess -tr`` sizes for the variant's own network: its estimate must track that network's
    measured peak within 10 % as well (the lean network is half as wide; the anti-aliased one keeps blurred
    copies at every pooling and upsampling: 1.03x / 1.06x measured, docs/planner.md). The anti-aliased
    network's measured peak depends on the CPU's convolution kernels (1.06x on an Intel Xeon, 1.10x on an AMD
    EPYC with AVX512-BF16 at 48^3): above the peak by up to 15 % is allowed there, the planner's safe side;
    below it, 10 % as for every network."""
    out = tmp_path / "rows.json"
    subprocess.run([sys.executable, str(BENCHMARK), "--networks", "nnUNetTrainerE3nnLean",
                    "nnUNetTrainerE3nnAntialias", "--stages", "4", "--sizes", "32", "48", "--batch", "1",
                    "--json", str(out)], check=True, capture_output=True, text=True, timeout=900)
    rows = json.loads(out.read_text())
    assert [(r["network"], r["patch"]) for r in rows] == [(n, p) for n in ("nnUNetTrainerE3nnLean",
                                                                           "nnUNetTrainerE3nnAntialias")
                                                          for p in (32, 48)]
    lean, antialias = rows[0], rows[2]
    assert lean["parameters"] < antialias["parameters"] / 3, "the lean variant's own (quarter-size) network"
    for r in rows:
        ratio = r["estimate"] / r["measured"]
        high = 1.15 if r["network"] == "nnUNetTrainerE3nnAntialias" else 1.1
        assert 0.9 <= ratio <= high, f"{r['network']}: estimate within 10 % of its peak at {r['patch']}^3: {ratio:.2f}"


def test_estimate_follows_the_resenc_presets_networks(tmp_path):
    """``plan_and_preprocess -preset M|L|XL`` sizes for nnU-Net's ``ResidualEncoderUNet`` (3^3 kernels, blocks
    1, 3, 4, 6 per stage) and the ``E3nnResEncUNet`` built on the same plans: both estimates within 10 % of
    the measured peak, with the constants fit to their own measurements (docs/planner.md, "ResEnc presets'
    networks"), at one size where the stock network's late (parameter-bound) peak dominates and one where its
    stored feature maps do (the steerable network's kernel-bound late peak dominates at both)."""
    out = tmp_path / "rows.json"
    subprocess.run([sys.executable, str(BENCHMARK), "--networks", "ResidualEncoderUNet", "E3nnResEncUNet",
                    "--stages", "4", "--sizes", *map(str, (RESENC_WARM_UP, *RESENC_SIZES)), "--batch", "1", "--json", str(out)],
                   check=True, capture_output=True, text=True, timeout=900)
    rows = [r for r in json.loads(out.read_text()) if r["patch"] != RESENC_WARM_UP]
    assert [(r["network"], r["patch"]) for r in rows] == [(n, p) for n in ("ResidualEncoderUNet", "E3nnResEncUNet")
                                                          for p in RESENC_SIZES]
    stock, steerable = rows[0], rows[len(RESENC_SIZES)]
    assert stock["parameters"] > 10 * steerable["parameters"], "nnU-Net's residual encoder against the steerable one"
    for r in rows:
        assert r["measured"] > 50 * 2 ** 20, "the pass allocated real memory"
        ratio = r["estimate"] / r["measured"]
        assert 0.9 <= ratio <= 1.1, f"{r['network']}: estimate within 10 % of its peak at {r['patch']}^3: {ratio:.3f}"
