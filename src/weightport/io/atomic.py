"""All-or-nothing output folders.

`atomic_output` hands out a fresh temporary folder next to the destination (named with the writer's host and
process id) and renames it into place only when the block that fills it finishes without an exception; on any
failure, including Ctrl-C (and SIGTERM or SIGHUP where the command turns them into exceptions), the temporary folder
is removed and the destination is left exactly as it was. A run killed outright leaves its folder behind; the next
run into the same folder on the same host removes it, whatever its destination, once no live process owns it. A
half-written checkpoint never appears under the destination name.
"""

from __future__ import annotations

import hashlib
import os
import re
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


# A temporary folder: `.<destination name>.tmp-<host>-<pid>-<token>` (`<pid>-<token>` before hosts were named).
_TEMPORARY = re.compile(r"\.(?P<stem>.+)\.tmp-(?P<owner>.+)-(?P<token>[0-9a-f]+)")


def _stem(name: str) -> str:
    """The destination's name as its temporary folders carry it: shortened, with a hash, where the whole name would
    not leave room for the `.tmp-<host>-<pid>-<token>` suffix within the file system's limit on a name."""
    if len(os.fsencode(name)) <= 120:
        return name
    digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:8]
    return os.fsdecode(os.fsencode(name)[:100]).rstrip("\ufffd") + "~" + digest


def _owner(leftover: str, stem: str | None = None) -> tuple[str, int] | None:
    """(host, pid) of a temporary folder's name (of the destination `stem`, if given), or None if not one."""
    match = _TEMPORARY.fullmatch(leftover)
    if match is None or (stem is not None and match["stem"] != stem):
        return None
    parts = match["owner"].rsplit("-", 1)
    if len(parts) == 1:  # pid-token, before hosts were named: only for the same destination
        return (socket.gethostname(), int(parts[0])) if stem is not None and parts[0].isdigit() else None
    return (parts[0], int(parts[1])) if parts[1].isdigit() else None


def _clean_leftovers(dst: Path) -> list[Path]:
    """Remove the temporary folders that killed runs left beside `dst`, for any destination in its folder: those of
    this host whose writer process no longer exists (a folder another host is writing, on a shared file system, is
    left alone). Returns them."""
    host, stem, removed = socket.gethostname(), _stem(dst.name), []
    for leftover in dst.parent.glob(".*.tmp-*"):
        owner = _owner(leftover.name, stem) or _owner(leftover.name)
        if owner is not None and owner[0] == host and not _alive(owner[1]):
            _remove(leftover)
            removed.append(leftover)
    return sorted(removed)


def _check_name(dst: Path) -> None:
    """Raise OutputError for a destination whose name the file system cannot hold."""
    try:
        limit = os.pathconf(dst.parent if dst.parent.is_dir() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for part in dst.parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise OutputError(f"output {part[:40]}...: the name is {size} bytes, more than the file system allows "
                              f"({limit}); choose a shorter output name")


def _refuse(dst: Path) -> OutputError:
    return OutputError(f"{dst} already exists; pass --overwrite (overwrite=True) to replace it or choose another "
                       "output path")


def _commit(tmp: Path, dst: Path, overwrite: bool) -> None:
    if not _exists(dst):
        os.rename(tmp, dst)
        return
    if not overwrite:
        raise _refuse(dst)
    old = dst.parent / f".{_stem(dst.name)}.old-{secrets.token_hex(4)}"
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
def atomic_output(dst: Path, *, overwrite: bool = False, inputs: Iterable[Path] = (),
                  cleaned: list[Path] | None = None) -> Iterator[Path]:
    """Yield a temporary folder that becomes `dst` when the block succeeds and vanishes when it fails. `inputs`
    are folders the block reads: a `dst` that is one of them, holds one or lies inside one is refused
    (OutputError), with or without `overwrite`; so is a name longer than the file system allows. The temporary
    folders that killed runs on this host left in `dst`'s folder are removed first, and added to `cleaned`."""
    dst = Path(dst)
    _check_name(dst)
    _check_inputs(dst, inputs)
    if _exists(dst) and not overwrite:
        raise _refuse(dst)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        removed = _clean_leftovers(dst)
        tmp = dst.parent / f".{_stem(dst.name)}.tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(6)}"
        tmp.mkdir()  # not mkdtemp: the folder keeps the umask's permissions, not 0700
    except OSError as e:
        raise OutputError(f"cannot create a folder in {dst.parent}: {e.strerror or e}; "
                          f"check the path and write permission") from e
    if cleaned is not None:
        cleaned += removed
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
