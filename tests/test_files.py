"""files: atomic writes leave files with the mode the umask gives (0644 under 022), never the temp's 0600."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from mlops import files


@contextlib.contextmanager
def umask(mask: int):
    """Run the block under `mask` (the umask is process-wide: restored afterwards)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _replace_with_new_file(tmp: Path) -> None:
    """A writer that unlinks the temp file and creates its own (as some libraries do)."""
    tmp.unlink()
    tmp.write_bytes(b"recreated")


WRITERS = {
    "write_bytes": lambda p: files.write_bytes(p, b"data"),
    "write_json": lambda p: files.write_json(p, {"a": 1.0}),
    "write_parquet": lambda p: files.write_parquet(p, pd.DataFrame({"a": [1, 2]})),
    "atomic_path": lambda p: _with_atomic_path(p, lambda tmp: tmp.write_text("x")),
    "atomic_path_recreated": lambda p: _with_atomic_path(p, _replace_with_new_file),
}


def _with_atomic_path(target: Path, write) -> None:
    with files.atomic_path(target) as tmp:
        write(tmp)


@pytest.mark.parametrize(
    "mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"]
)
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_written_files_follow_the_umask(tmp_path, writer, mask, expected):
    target = tmp_path / "out" / "file.bin"
    with umask(mask):
        assert files.current_umask() == mask
        WRITERS[writer](target)
    assert mode(target) == expected, f"{writer} under umask {mask:03o}: {mode(target):03o}"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]  # no temp file left behind


def test_overwrite_takes_the_umask_mode_not_the_old_files(tmp_path):
    target = tmp_path / "file.json"
    target.write_text("{}")
    target.chmod(0o600)
    with umask(0o022):
        files.write_json(target, {"b": 2})
    assert mode(target) == 0o644


def test_failed_block_leaves_nothing(tmp_path):
    target = tmp_path / "file.bin"
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_pipeline_outputs_are_readable_by_others(pipeline):
    """`mlops train` and `evaluate` outputs get 0666 less the session's umask (what a container user reads)."""
    expected = 0o666 & ~files.current_umask()
    written = [*pipeline.models.iterdir(), pipeline.metrics, *pipeline.plots.iterdir()]
    assert written
    assert {p.name: mode(p) for p in written} == {p.name: expected for p in written}
