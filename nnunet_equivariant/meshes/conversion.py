"""What every dataset converter shares: reading cases with per-case errors, atomic output, a report.

A bad case (a mesh that cannot be closed, ``.ad``/``.obj`` that disagree, unknown or missing labels, a
missing frame) is skipped with its error, which names the file; the conversion goes on and the report lists
what was skipped. Output is written into a temporary folder beside the target and moved into place at the
end, so an interrupted conversion leaves no half-written dataset; an existing target is only replaced
with ``overwrite=True``.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from nnunet_equivariant.meshes.labelled_mesh import LabelledMesh
from nnunet_equivariant.meshes.sources import MeshCase

__all__ = ["ConversionReport", "read_cases", "atomic_folder", "atomic_write_text"]


@dataclass
class ConversionReport:
    """Outcome of a conversion: where it went, the cases written and the cases skipped (name -> error)."""

    output: Path
    written: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"wrote {len(self.written)} cases to {self.output}"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} cases:")
            lines += [f"  {name}: {reason}" for name, reason in self.skipped.items()]
        lines += self.notes
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"output": str(self.output), "written": self.written, "skipped": self.skipped,
                           "notes": self.notes}, indent=2)


def read_cases(cases: Sequence[MeshCase], report: ConversionReport, desc: str = "reading meshes") \
        -> list[tuple[MeshCase, LabelledMesh]]:
    """Read every case (tqdm progress); a case whose reading fails is recorded in ``report.skipped``."""
    from tqdm import tqdm

    meshes = []
    for case in tqdm(cases, desc=desc, unit="case"):
        try:
            meshes.append((case, case.read()))
        except (ValueError, FileNotFoundError) as e:
            report.skipped[case.name] = str(e)
    return meshes


def check_target(target: Path, overwrite: bool) -> None:
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite (overwrite=True) to replace it")


@contextmanager
def atomic_folder(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``target`` when the block succeeds."""
    target = Path(target)
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        check_target(target, overwrite)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Write a text file through a temporary file and a rename."""
    path = Path(path)
    check_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
