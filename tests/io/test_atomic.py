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


def test_leftovers_of_dead_writers_on_this_host_are_removed_and_others_kept(tmp_path: Path) -> None:
    """A killed run's folder is removed by the next run on its host: named host-pid-token (pid-token before hosts
    were named); a folder of another host (a shared file system) or of a live process is left alone."""
    import os
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid, host = int(dead.stdout), socket.gethostname()
    names = {"dead_here": f".out.tmp-{host}-{pid}-ab12", "old_naming": f".out.tmp-{pid}-cd34",
             "other_host": f".out.tmp-another-host-{pid}-ef56", "alive_here": f".out.tmp-{host}-{os.getpid()}-0a0b"}
    for name in names.values():
        (tmp_path / name).mkdir()
    with atomic_output(tmp_path / "out") as tmp:
        assert tmp.name.startswith(f".out.tmp-{host}-{os.getpid()}-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names["other_host"], names["alive_here"], "out"])
