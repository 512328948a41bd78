"""benchmarks/gpu_check.py runs end to end on the CPU at a small size (what a GPU machine runs at 128^3):
every trainer measured, the page written with its status and targets. No timing is asserted."""
import math

from benchmark_scripts import load_benchmark


def _gpu_check():
    return load_benchmark("gpu_check")


def test_gpu_check_runs_on_the_cpu_at_a_small_size(tmp_path):
    gpu_check = _gpu_check()
    out = tmp_path / "benchmarks_gpu.md"
    results, table = gpu_check.run(["--device", "cpu", "--small", "--compile", "off", "--steps", "2",
                                    "--out", str(out)])
    assert list(results) == gpu_check.TRAINERS.split(",")
    for name, r in results.items():
        for key in ("train_step_s", "val_step_s", "epoch_s", "predict_s", "fp16_equivariance", "fp16_vs_fp32"):
            assert math.isfinite(r[key]) and r[key] > 0, (name, key, r[key])
    # each trainer's own test-time mirroring: stock 8 passes, SO(3) one axis, f123 none
    assert results["nnUNetTrainer"]["mirror_axes"] == (0, 1, 2)
    assert results["nnUNetTrainerE3nn"]["mirror_axes"] == (0,)
    assert results["nnUNetTrainerMirror"]["mirror_axes"] is None
    stock = results["nnUNetTrainer"]["fp16_equivariance"]
    for name in ("nnUNetTrainerE3nn", "nnUNetTrainerE3nnShells", "nnUNetTrainerE3nnLean", "nnUNetTrainerMirror"):
        assert results[name]["fp16_equivariance"] < 0.1 * stock, "ours stay equivariant in float16; stock is not"
    page = out.read_text()
    assert "No GPU run exists yet" in page and "python benchmarks/gpu_check.py" in page
    assert all(f"| {name} |" in page for name in results)
    rows = [line for line in page.splitlines() if line.endswith(("| PASS |", "| FAIL |"))]
    assert len(rows) == len(gpu_check.verdicts(results)) == 7, "one target row per verdict"
