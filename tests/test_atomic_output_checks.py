"""`atomic_output`'s refusals and recoveries: destinations that are, hold or lie inside an input; replacing a file;
rolling back when the final rename fails; leftovers of writers on hosts with dashes in their names or run by
other users."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from weightport.errors import OutputError
from weightport.io import atomic
from weightport.io.atomic import atomic_output


def test_a_destination_that_is_holds_or_lies_inside_an_input_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "in" / "model"
    src.mkdir(parents=True)
    for dst, words in ((src, "is or holds the input"), (tmp_path / "in", "is or holds the input"),
                       (src / "out", "lies inside the input")):
        with pytest.raises(OutputError, match=words):
            with atomic_output(dst, overwrite=True, inputs=[tmp_path / "other", src]):
                pass
    with atomic_output(tmp_path / "out", inputs=[src]) as tmp:
        (tmp / "f").write_text("x")
    with atomic_output(tmp_path / "in" / "model2", inputs=[src]) as tmp:  # a sibling whose name extends the input's
        (tmp / "f").write_text("x")
    assert (tmp_path / "out" / "f").is_file() and (tmp_path / "in" / "model2" / "f").is_file()


def test_refusing_an_existing_destination_names_it(tmp_path: Path) -> None:
    dst = tmp_path / "out"
    dst.mkdir()
    with pytest.raises(OutputError, match=f"{dst} already exists"):
        with atomic_output(dst):
            pass
    late = tmp_path / "late"
    with pytest.raises(OutputError, match=f"{late} already exists"):
        with atomic_output(late) as tmp:
            late.mkdir()  # appears while the block runs: refused at the rename, and the new folder removed
            (tmp / "f").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late", "out"] and not any(late.iterdir())


def test_overwrite_replaces_a_file_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    dst = tmp_path / "out"
    dst.write_text("old file")
    with atomic_output(dst, overwrite=True) as tmp:
        (tmp / "f").write_text("new")
    assert (dst / "f").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_final_rename_puts_the_old_destination_back(tmp_path: Path, monkeypatch) -> None:
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "f").write_text("old")
    rename = os.rename

    def failing(a, b):  # the second rename (the new folder into place) fails
        if Path(a).name.startswith(".out.tmp-"):
            raise OSError(28, "No space left on device")
        rename(a, b)

    monkeypatch.setattr(atomic.os, "rename", failing)
    with pytest.raises(OutputError, match="cannot move the output into place"):
        with atomic_output(dst, overwrite=True) as tmp:
            (tmp / "f").write_text("new")
    assert (dst / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_leftovers_are_matched_by_host_names_with_dashes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "node-1-a")
    dead = 2**22 + 12345  # above Linux's largest pid
    mine = tmp_path / f".out.tmp-node-1-a-{dead}-abc123"
    other_host = tmp_path / f".out.tmp-node-1-b-{dead}-abc123"
    for folder in (mine, other_host):
        folder.mkdir()
    with atomic_output(tmp_path / "out"):
        pass
    assert not mine.exists() and other_host.exists()


def test_a_leftover_of_another_users_live_process_is_kept(tmp_path: Path, monkeypatch) -> None:
    def not_permitted(pid, signal):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "kill", not_permitted)
    leftover = tmp_path / f".out.tmp-{socket.gethostname()}-4242-abc123"
    leftover.mkdir()
    with atomic_output(tmp_path / "out"):
        pass
    assert leftover.exists()
