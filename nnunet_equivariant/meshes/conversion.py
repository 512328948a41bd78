"""What every dataset converter shares: reading cases with per-case errors, atomic output, a report.

A bad case (a mesh that cannot be closed, ``.ad``/``.obj`` that disagree, unknown or missing labels, a
missing frame) is skipped with its error, which names the file; the conversion goes on and the report lists
what was skipped. Output is written into a temporary folder beside the target and moved into place at the
end, so an interrupted conversion leaves no half-written dataset; an existing target is only replaced
with ``overwrite=True``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from nnunet_equivariant.meshes.labelled_mesh import LabelledMesh
from nnunet_equivariant.meshes.sources import MeshCase

__all__ = ["ConversionReport", "read_cases"]


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
