"""Tests of atomic output folders, on the real file system."""

from __future__ import annotations

from pathlib import Path

import pytest

from weightport.errors import OutputError
from weightport.io.atomic import atomic_output


def test_success_renames_into_place(tmp_path: Path) -> None:
    dst = tmp_path / "new" / "out"
    with atomic_output(dst) as tmp:
        assert tmp.parent == dst.parent and tmp.name.startswith(".out.tmp-") and tmp.is_dir()
        (tmp / "model.safetensors").write_text("x")
        assert not dst.exists()
    assert (dst / "model.safetensors").read_text() == "x"
    assert [p.name for p in dst.parent.iterdir()] == ["out"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_exception_leaves_nothing(tmp_path: Path, exc: type[BaseException]) -> None:
    dst = tmp_path / "out"
    with pytest.raises(exc):
        with atomic_output(dst) as tmp:
            (tmp / "part").write_text("half")
            raise exc("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_dst_refused(tmp_path: Path) -> None:
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep").write_text("old")
    with pytest.raises(OutputError, match="out already exists.*--overwrite"):
        with atomic_output(dst):
            pytest.fail("block must not run")
    assert (dst / "keep").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_overwrite_replaces(tmp_path: Path) -> None:
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep").write_text("old")
    with atomic_output(dst, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
        assert (dst / "keep").exists()
    assert [p.name for p in dst.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_overwrite_failure_keeps_old(tmp_path: Path) -> None:
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep").write_text("old")
    with pytest.raises(ValueError):
        with atomic_output(dst, overwrite=True):
            raise ValueError
    assert (dst / "keep").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
