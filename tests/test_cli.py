"""The CLI's dispatch: every ``nnunet-equivariant`` line in README.md and docs/ parses to a run function,
and spellings of earlier releases keep working."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_equivariant.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _documented_lines():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())  # join continued lines
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("nnunet-equivariant "):
                line = line.split("#")[0].replace("[", "").replace("]", "")  # optional flags: give them all
                yield doc.name, re.sub(r"\bID\b|\bGB\b|\bN\b|\bMM\b", "1", line)


DOCUMENTED = list(_documented_lines())


def test_docs_have_command_lines():
    assert {name for name, _ in DOCUMENTED} >= {"README.md", "meshes.md", "planner.md", "rotation_eval.md"}


@pytest.mark.parametrize("doc,line", DOCUMENTED)
def test_documented_line_parses(doc, line, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", "/raw")
    argv = shlex.split(line)[1:]
    args = build_parser().parse_args(argv)
    assert callable(args.run), f"{doc}: '{line}' dispatches to no run function"


@pytest.mark.parametrize("argv,dest,value", [
    (["demo", "-device", "cpu"], "device", "cpu"),   # nnU-Net's spelling, before the CLI had one flag style
    (["demo", "--device", "cpu"], "device", "cpu"),
    (["demo"], "device", None),
    (["synthetic", "--raw", "r", "--dataset-id", "7"], "dataset_id", 7),
    (["mesh", "to_nnunet", "intra", "in", "-d", "9", "--raw", "r"], "dataset_id", 9),
    (["plan_and_preprocess", "-d", "1"], "tr", "nnUNetTrainerE3nn"),   # sized for nnUNetv2_train's -tr
    (["plan_and_preprocess", "-d", "1", "-tr", "nnUNetTrainerE3nnLean"], "tr", "nnUNetTrainerE3nnLean"),
    (["plan_and_preprocess", "-d", "1"], "kernel_size", None),          # None: the trainer's spec decides
])
def test_spellings(argv, dest, value):
    assert getattr(build_parser().parse_args(argv), dest) == value


def test_each_command_runs_its_own_function():
    parser = build_parser()
    runs = {tuple(argv[:2]): parser.parse_args(argv).run for argv in (
        ["mesh", "standins", "intra", "x"], ["mesh", "to_patches", "intra", "x", "-o", "y", "--side", "1"],
        ["mesh", "from_nnunet", "-i", "a", "-m", "b", "-o", "c"], ["mesh", "train_patches", "p", "-o", "o"],
        ["demo"], ["synthetic", "--raw", "r"], ["plan_and_preprocess", "-d", "1"],
    )}
    assert len(set(runs.values())) == len(runs)


def test_building_the_parser_imports_no_heavy_module():
    """Command modules import the library only inside ``run``, so ``--help`` and a typo answer at once."""
    code = ("import sys; from nnunet_equivariant.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'nnunetv2', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
