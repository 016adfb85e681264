"""All-or-nothing output folders.

`atomic_output` hands out a fresh temporary folder next to the destination (named with the writer's host and
process id) and renames it into place only when the block that fills it finishes without an exception; on any
failure, including Ctrl-C, the temporary folder is removed and the destination is left exactly as it was. A run
killed outright leaves its folder behind; the next run for the same destination on the same host removes it. A
half-written checkpoint never appears under the destination name.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from weightport.errors import OutputError


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _clean_leftovers(dst: Path) -> None:
    """Remove temporary folders that a killed run left beside `dst`: those of this host whose writer process no
    longer exists (a folder another host is writing, on a shared file system, is left alone)."""
    prefix, host = f".{dst.name}.tmp-", socket.gethostname()
    for leftover in dst.parent.glob(f"{glob.escape(prefix)}*"):
        parts = leftover.name[len(prefix):].rsplit("-", 2)  # host-pid-token (pid-token before hosts were named)
        writer, pid = (parts[0], parts[1]) if len(parts) == 3 else (host, parts[0])
        if writer == host and pid.isdigit() and not _alive(int(pid)):
            _remove(leftover)


def _refuse(dst: Path) -> OutputError:
    return OutputError(f"{dst} already exists; pass --overwrite (overwrite=True) to replace it or choose another "
                       "output path")


def _commit(tmp: Path, dst: Path, overwrite: bool) -> None:
    if not _exists(dst):
        os.rename(tmp, dst)
        return
    if not overwrite:
        raise _refuse(dst)
    old = dst.parent / f".{dst.name}.old-{secrets.token_hex(4)}"
    os.rename(dst, old)
    try:
        os.rename(tmp, dst)
    except BaseException:
        os.rename(old, dst)
        raise
    _remove(old)


def _check_inputs(dst: Path, inputs: Iterable[Path]) -> None:
    """Refuse a destination that is an input, holds one (replacing it would delete the input) or lies inside one."""
    target = dst.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if target == source or target in source.parents:
            raise OutputError(f"{dst} is or holds the input {given}; writing there would delete it: choose another "
                              "output path")
        if source in target.parents:
            raise OutputError(f"{dst} lies inside the input {given}; choose an output path outside it")


@contextmanager
def atomic_output(dst: Path, *, overwrite: bool = False, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """Yield a temporary folder that becomes `dst` when the block succeeds and vanishes when it fails. `inputs`
    are folders the block reads: a `dst` that is one of them, holds one or lies inside one is refused
    (OutputError), with or without `overwrite`."""
    dst = Path(dst)
    _check_inputs(dst, inputs)
    if _exists(dst) and not overwrite:
        raise _refuse(dst)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(dst)
        tmp = dst.parent / f".{dst.name}.tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(6)}"
        tmp.mkdir()  # not mkdtemp: the folder keeps the umask's permissions, not 0700
    except OSError as e:
        raise OutputError(f"cannot create a folder in {dst.parent}: {e.strerror or e}; "
                          f"check the path and write permission") from e
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    try:
        _commit(tmp, dst, overwrite)
    except BaseException as e:
        _remove(tmp)
        if isinstance(e, OSError):
            raise OutputError(f"cannot move the output into place as {dst}: {e.strerror or e}; "
                              f"check the path and write permission") from e
        raise
