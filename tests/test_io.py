"""Atomic output: a file appears whole under its name or not at all, in the format its ending names."""
import pytest

from nnunet_equivariant.io import atomic_file


def test_atomic_file_keeps_the_whole_ending_and_renames_on_success(tmp_path):
    target = tmp_path / "sub" / "case_001.nii.gz"
    with atomic_file(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".")
        assert tmp.name.endswith(".nii.gz"), "writers that pick the format by the ending see .nii.gz"
        tmp.write_bytes(b"data")
        assert not target.exists(), "nothing under the name before the block ends"
    assert target.read_bytes() == b"data"
    assert sorted(p.name for p in target.parent.iterdir()) == ["case_001.nii.gz"], "no temporary file left"


def test_atomic_file_leaves_nothing_on_failure_and_refuses_an_existing_file(tmp_path):
    target = tmp_path / "model.pt2"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="model.pt2"):
        with atomic_file(target):
            pass
    with atomic_file(target, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
