"""Lazy safetensors reading and streaming sharded safetensors writing.

Headers are parsed with plain `json` and validated strictly, so a conversion is planned from names, dtypes and
shapes without touching tensor data; `load` reads exactly one tensor's byte range. The writer knows every output
tensor up front, lays out shards, headers and offsets before any data exists, then writes each tensor at its offset
as soon as it is produced, in any order: byte ranges with `os.pwrite` or `copy_file_range`, blocks of columns of a
matrix through a short-lived shared map. Every write is checked against the plan (no overlap, nothing missing at
close). Nothing is ever unpickled.
"""

from __future__ import annotations

import bisect
import errno
import json
import math
import mmap
import os
import re
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate
from decimal import Decimal
from pathlib import Path
from typing import Callable, Collection, Iterator, Sequence

import numpy as np

from weightport.core import dtypes
from weightport.errors import CoverageError, FormatError, OutputError, WeightportError, report, shown

DTYPE_SIZES: dict[str, int] = dtypes.SIZES
PICKLE_REFUSED = ("pytorch_model.bin files are never read, because loading them runs pickle: convert them to "
                  "safetensors first (for example with transformers' save_pretrained(safe_serialization=True))")
_MAX_HEADER = 100 * 1024 * 1024
_CHUNK = 64 * 1024 * 1024
_MAP_SPAN = 8 * 1024 * 1024  # file bytes per shared map of a block write: its pages leave memory at each unmap
_NO_COPY_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP}


@contextmanager
def _os_errors(cls: type[WeightportError], what: str, todo: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise cls(f"{what}: {e.strerror or e}; {todo}") from e


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Where one tensor lives: name, dtype code, shape, file and absolute byte range."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """One tensor the writer will receive: name, dtype code and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def _nbytes(dtype: str, shape: Sequence[int]) -> int:
    return DTYPE_SIZES[dtype] * math.prod(shape)


class _Duplicate(ValueError):
    """A JSON object that names one key twice (json keeps the last silently)."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _integer(text: str) -> int | float:
    """A JSON integer as the reference reader takes it for a shape or an offset: a negative one (`-0` too) is not
    an unsigned integer, so it becomes a float, which the checks below refuse."""
    return float(text) if text.startswith("-") else int(text)


_LIMIT = 2**64  # shapes, offsets and sizes are 64-bit unsigned integers in the format (and the reference reader)


def _checked_size(dtype: str, shape: list[int]) -> int | None:
    """Bytes of a tensor, or None where a dimension, a partial product or the size does not fit in 64 bits (the
    reference reader multiplies with overflow checks, left to right)."""
    count = 1
    for d in shape:
        count *= d
        if d >= _LIMIT or count >= _LIMIT:
            return None
    size = count * DTYPE_SIZES[dtype]
    return size if size < _LIMIT else None


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Tensor infos and the __metadata__ dict of one .safetensors file, validated as strictly as the reference reader
    (the `safetensors` package) validates it: a JSON object naming each key once, a known dtype, a shape of
    non-negative integers and byte ranges that tile the data section exactly (in order, no gap, no overlap, nothing
    after the last tensor). Raises FormatError naming the file, the tensor and what is wrong."""
    path = Path(path)
    hint = "the file is truncated or not safetensors; re-download or re-export it"
    with _os_errors(FormatError, f"cannot read {path}", "check the path and permissions"), open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise FormatError(f"{path}: only {size} bytes, too short for a safetensors header; {hint}")
        n = int.from_bytes(f.read(8), "little")
        if n > _MAX_HEADER or 8 + n > size:
            raise FormatError(f"{path}: header length {n} is invalid for a {size}-byte file; {hint}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_pairs, parse_constant=_no_constant,
                            parse_int=_integer)
    except _Duplicate as e:
        raise FormatError(f"{path}: the header names {e.key!r} twice (the reference safetensors reader refuses such a "
                          "file; a reader that keeps one of them reads another model); re-export or re-download it "
                          "(safetensors writers name each tensor once)") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError(f"{path}: header is not valid UTF-8 JSON ({e}); {hint}") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: header is not a JSON object; {hint}")
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError(f"{path}: __metadata__ must map strings to strings; {hint}")
    for text in [*header, *metadata, *metadata.values()]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise FormatError(f"{path}: the header holds {text!r}, which is not valid UTF-8 (a lone surrogate); "
                              f"{hint}") from None
    base, data_len = 8 + n, size - 8 - n
    infos: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        where = f"{path}: tensor {name!r}"
        entry = entry if isinstance(entry, dict) else {}
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise FormatError(f"{where}: unknown dtype {dtype!r} (supported: {', '.join(DTYPE_SIZES)}); re-export the "
                              f"checkpoint in one of these (quantized formats must be dequantized first)")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise FormatError(f"{where}: shape {shown(shape)} is not a list of non-negative integers; {hint}")
        if _checked_size(dtype, shape) is None:
            raise FormatError(f"{where}: shape {shown(shape)} of {dtype} holds more than 2**64 bytes; {hint}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_len):
            raise FormatError(f"{where}: data_offsets {shown(offsets)} out of range for {data_len} data bytes; {hint}")
        if offsets[1] - offsets[0] != _nbytes(dtype, shape):
            raise FormatError(f"{where}: data_offsets {offsets!r} span {offsets[1] - offsets[0]} bytes but "
                              f"{dtype} {shape} needs {_nbytes(dtype, shape)}; {hint}")
        infos[name] = TensorInfo(name, dtype, tuple(shape), path, base + offsets[0], base + offsets[1])
    ordered = sorted(infos.values(), key=lambda i: (i.start, i.end))
    for a, b in zip(ordered, ordered[1:]):
        if b.start < a.end:
            raise FormatError(f"{path}: tensors {a.name!r} and {b.name!r} overlap; {hint}")
    covered = base
    for info in ordered:
        if info.start != covered:
            raise FormatError(f"{path}: data bytes {covered - base}..{info.start - base} before tensor {info.name!r} "
                              f"belong to no tensor (the reference safetensors reader refuses such a file); {hint}")
        covered = info.end
    if covered != size:
        raise FormatError(f"{path}: the last {size - covered} data bytes belong to no tensor (the reference "
                          f"safetensors reader refuses such a file); {hint}")
    return infos, metadata


def _check_unique(into: dict[str, TensorInfo], infos: dict[str, TensorInfo], problems: list[str]) -> None:
    for name, info in infos.items():
        if name in into:
            problems.append(f"tensor {name!r} is in both {into[name].file.name} and {info.file.name}")
        else:
            into[name] = info


def read_checkpoint(folder: Path, index_name: str = "model.safetensors.index.json",
                    single_name: str = "model.safetensors") -> dict[str, TensorInfo]:
    """All tensors of a checkpoint folder: the sharded files of the index if present, else the single file.

    Raises FormatError for a folder that holds both (transformers loads the single file and ignores the index, a
    converter that reads the shards converts another model: which one is stale only the user knows), for an index
    that is not a JSON object of a `weight_map` naming each tensor once, for a shard it names that lies outside the
    folder or is missing, and for shards that disagree with it."""
    folder = Path(folder)
    index = folder / index_name
    if not index.is_file():
        if (folder / single_name).is_file():
            return read_header(folder / single_name)[0]
        raise FormatError(
            f"no {single_name} or {index_name} in {folder}; point at a folder with safetensors weights. "
            f"{PICKLE_REFUSED}")
    if (folder / single_name).exists():
        raise FormatError(f"{folder} holds both {single_name} and the sharded weights of {index_name}: transformers "
                          f"loads {single_name} and ignores the shards, so which one is the model is ambiguous; "
                          "remove the stale one (or move it out of the folder) and convert again")
    try:
        document = json.loads(index.read_text(encoding="utf-8"), object_pairs_hook=_unique_pairs)
        weight_map = document["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map must map tensor names to file names")
    except _Duplicate as e:
        raise FormatError(f"{index}: names {e.key!r} twice; regenerate the index") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise FormatError(f"{index}: cannot read weight_map ({e!r}); re-download or regenerate the index") from None
    problems: list[str] = []
    tensors: dict[str, TensorInfo] = {}
    found: dict[str, set[str]] = {}  # file name in weight_map -> tensor names in that file
    for file in sorted(set(weight_map.values())):
        if not inside(file):
            problems.append(f"shard {file} listed in weight_map is outside the checkpoint folder {folder}")
            continue
        if not (folder / file).is_file():
            problems.append(f"shard {file} listed in weight_map is missing from {folder}")
            continue
        infos, _ = read_header(folder / file)
        found[file] = set(infos)
        problems += [f"tensor {name!r} is in {file} but not in weight_map" for name in infos if name not in weight_map]
        _check_unique(tensors, infos, problems)
    for name, file in weight_map.items():
        if file in found and name not in found[file]:
            problems.append(f"tensor {name!r} is listed under {file} in weight_map but is not in that file")
    if problems:
        raise FormatError(report(f"{index} does not match its shards", problems,
                                 "re-download the checkpoint or regenerate its index"))
    return tensors


def inside(name: str) -> bool:
    """Whether a file name that a checkpoint's index or metadata gives names a file inside its folder: relative,
    with no empty, `.` or `..` part (checked by name: links inside the folder, as the Hugging Face cache makes them,
    are followed as any reader follows them)."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def read_files(paths: list[Path]) -> dict[str, TensorInfo]:
    """Union of the tensors of several .safetensors files; a name in two files is an error."""
    problems: list[str] = []
    tensors: dict[str, TensorInfo] = {}
    for path in paths:
        _check_unique(tensors, read_header(Path(path))[0], problems)
    if problems:
        raise FormatError(report("duplicate tensors across files", problems, "remove the stale or extra file"))
    return tensors


def read_range(info: TensorInfo, offset: int, size: int) -> np.ndarray:
    """`size` bytes of one tensor from byte `offset`, as a new uint8 array (exactly that range is read)."""
    if offset < 0 or size < 0 or offset + size > info.nbytes:
        raise FormatError(f"{info.file}: tensor {info.name!r} has no bytes {offset}..{offset + size}")
    buf, pos = dtypes.empty(size, np.uint8), 0
    with _os_errors(FormatError, f"cannot read tensor {info.name!r} from {info.file}", "check the file"), \
            open(info.file, "rb", buffering=0) as f:
        view = memoryview(buf)
        while pos < size:
            got = os.preadv(f.fileno(), [view[pos:]], info.start + offset + pos)
            if got == 0:
                raise FormatError(f"{info.file}: tensor {info.name!r} ends past the end of the file; re-download it")
            pos += got
    return buf


def read_block(info: TensorInfo, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Rows `rows[0]:rows[1]` and columns `cols[0]:cols[1]` of a 2-D tensor as a raw array, read row segment by row
    segment (no memory map: a band of columns stays a band of memory)."""
    (r0, r1), (c0, c1), width = rows, cols, DTYPE_SIZES[info.dtype]
    if len(info.shape) != 2 or not (0 <= r0 <= r1 <= info.shape[0] and 0 <= c0 <= c1 <= info.shape[1]):
        raise FormatError(f"{info.file}: tensor {info.name!r} {list(info.shape)} has no block {rows} x {cols}")
    if c0 == 0 and c1 == info.shape[1]:
        return read_range(info, r0 * info.shape[1] * width, (r1 - r0) * (c1 - c0) * width).view(
            dtypes.raw(info.dtype)).reshape(r1 - r0, c1 - c0)
    out = dtypes.empty((r1 - r0, c1 - c0), dtypes.raw(info.dtype))
    segment, stride = (c1 - c0) * width, info.shape[1] * width
    with _os_errors(FormatError, f"cannot read tensor {info.name!r} from {info.file}", "check the file"), \
            open(info.file, "rb", buffering=0) as f:
        fd, raw = f.fileno(), memoryview(out.reshape(-1).view(np.uint8))
        # A read per row defeats readahead: ask for the rows' whole span at once (a no-op where it is cached).
        if hasattr(os, "posix_fadvise"):  # Linux; elsewhere only a hint is lost
            os.posix_fadvise(fd, info.start + r0 * stride, (r1 - r0) * stride, os.POSIX_FADV_WILLNEED)
        for i in range(r1 - r0):
            position = info.start + (r0 + i) * stride + c0 * width
            if os.preadv(fd, [raw[i * segment : (i + 1) * segment]], position) != segment:
                raise FormatError(f"{info.file}: tensor {info.name!r} ends past the end of the file; re-download it")
    return out


def read_raw(info: TensorInfo) -> np.ndarray:
    """One tensor as a raw array (unsigned ints of its dtype's width) of its shape."""
    return read_range(info, 0, info.nbytes).view(dtypes.raw(info.dtype)).reshape(info.shape)


_MAP_ABOVE = 64 * 2**20  # tensors above this size are viewed through a memory map, smaller ones read whole


def _shrunk(info: TensorInfo, size: int) -> FormatError:
    return FormatError(f"{info.file}: the file shrank to {size} bytes while it was being converted (tensor "
                       f"{info.name!r} needs bytes up to {info.end}); nothing was written: convert again once the "
                       "file is complete (is another program writing it?)")


class Mappings:
    """Tensors of source files as read-only numpy arrays for steps that compute (transposes), shared by threads.

    A tensor of at most 64 MiB is read whole into memory, so a file that shrinks meanwhile is a short read and an
    error, never zeros. A larger one is a view of a read-only memory map (its pages are not copied into private
    memory, and `release` drops them from this process again); its file's size is checked before the view is made and
    at every `release`, so a file that shrinks is a FormatError at the next check rather than a crash (SIGBUS) when a
    missing page is touched."""

    def __init__(self) -> None:
        self._maps: dict[Path, tuple[int, mmap.mmap]] = {}
        self._lock = threading.Lock()

    def _map(self, info: TensorInfo) -> mmap.mmap:
        with self._lock:
            if info.file not in self._maps:
                with _os_errors(FormatError, f"cannot map {info.file}", "check the file"):
                    fd = os.open(info.file, os.O_RDONLY)
                    try:
                        self._maps[info.file] = fd, mmap.mmap(fd, 0, prot=mmap.PROT_READ)
                    except BaseException:
                        os.close(fd)
                        raise
            self._check(info)
            return self._maps[info.file][1]

    def _check(self, info: TensorInfo) -> None:
        fd = self._maps[info.file][0]
        size = os.fstat(fd).st_size
        if size < info.end:
            raise _shrunk(info, size)

    def view(self, info: TensorInfo) -> np.ndarray:
        """The tensor as a read-only raw array of its shape (read whole, or backed by the file's pages)."""
        count = info.nbytes // DTYPE_SIZES[info.dtype]
        if not count:
            return np.empty(info.shape, dtypes.raw(info.dtype))
        if info.nbytes <= _MAP_ABOVE:
            array = read_raw(info)
            array.flags.writeable = False  # read-only, as a mapped view is
            return array
        mapped = self._map(info)
        start = info.start - info.start % mmap.PAGESIZE
        mapped.madvise(mmap.MADV_WILLNEED, start, info.end - start)  # read ahead: transposes touch it out of order
        return np.frombuffer(mapped, dtypes.raw(info.dtype), count, info.start).reshape(info.shape)

    def release(self, info: TensorInfo) -> None:
        """Drop the tensor's pages from this process (they stay in the page cache); raise FormatError if its file
        has shrunk since."""
        if info.nbytes and info.file in self._maps:
            start = info.start - info.start % mmap.PAGESIZE
            self._maps[info.file][1].madvise(mmap.MADV_DONTNEED, start, info.end - start)
            self._check(info)

    def close(self) -> None:
        with self._lock:
            maps, self._maps = list(self._maps.values()), {}
        for fd, mapped in maps:
            try:
                mapped.close()
            except BufferError:  # a view is still alive somewhere; the map closes when it goes
                pass
            os.close(fd)


def stamps(files: Collection[Path]) -> dict[Path, tuple[int, int, int, int]]:
    """(device, inode, size, modification time in ns) of each file, to tell later whether it changed."""
    out = {}
    for file in files:
        with _os_errors(FormatError, f"cannot read {file}", "check the path and permissions"):
            st = os.stat(file)
        out[Path(file)] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def check_unchanged(before: dict[Path, tuple[int, int, int, int]]) -> None:
    """Raise FormatError naming the files that changed (replaced, resized or rewritten) since `stamps` was taken:
    what was read from them may be a mix of two versions."""
    changed = []
    for file, stamp in before.items():
        try:
            now = stamps([file])[file]
        except FormatError:
            changed.append(f"{file} is gone")
            continue
        if now != stamp:
            what = f"its size went from {stamp[2]} to {now[2]} bytes" if now[2] != stamp[2] else "it was rewritten"
            changed.append(f"{file} changed while it was being converted: {what}")
    if changed:
        raise FormatError(report("source files changed during the conversion", changed,
                                 "nothing was written; convert again once no other program writes the files"))


def check_sizes(tensors: Collection[TensorInfo]) -> None:
    """Raise FormatError if a file no longer holds the bytes its header promised (it shrank after it was read)."""
    ends: dict[Path, TensorInfo] = {}
    for info in tensors:
        if info.file not in ends or info.end > ends[info.file].end:
            ends[info.file] = info
    for file, info in ends.items():
        size = stamps([file])[file][2]
        if size < info.end:
            raise _shrunk(info, size)


def load(info: TensorInfo):  # noqa: ANN201 - a torch.Tensor; torch is imported only here
    """One tensor as a torch tensor of its dtype (for tests and callers that want torch)."""
    return dtypes.to_torch(read_raw(info), info.dtype)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def shard_layout(tensors: Sequence[OutputTensor], max_shard_bytes: int | None,
                 shard_names: Callable[[int], list[str]]) -> dict[str, list[OutputTensor]]:
    """The shard files of an output, in order, each with its tensors: tensors in the given order, a new file
    whenever the next tensor would take the current one past `max_shard_bytes` (None: one file). Raises
    CoverageError for a tensor listed twice or of an unknown dtype."""
    bad = [f"tensor {n!r} is listed {c} times" for n, c in Counter(t.name for t in tensors).items() if c > 1]
    bad += [f"tensor {t.name!r}: unknown dtype {t.dtype!r}" for t in tensors if t.dtype not in DTYPE_SIZES]
    if bad:
        raise CoverageError(report("the output plan is invalid", bad, "fix the conversion plan"))
    groups: list[list[OutputTensor]] = [[]]
    size = 0
    for t in tensors:
        n = _nbytes(t.dtype, t.shape)
        if max_shard_bytes is not None and groups[-1] and size + n > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += n
    return dict(zip(shard_names(len(groups)), groups, strict=True))


def file_bytes(group: Sequence[OutputTensor]) -> int:
    """The data bytes of a shard's tensors (its header aside)."""
    return sum(_nbytes(t.dtype, t.shape) for t in group)


class ShardedWriter:
    """Streaming writer of safetensors shards whose layout is fixed from the full tensor list up front (see
    `shard_layout`). With `files`, only those shards are created and written (one process's part of a conversion
    split across processes); `weight_map` still names the file of every tensor."""

    def __init__(self, folder: Path, tensors: Sequence[OutputTensor], *, max_shard_bytes: int | None,
                 shard_names: Callable[[int], list[str]], metadata: dict[str, str] | None = None,
                 files: Collection[str] | None = None):
        self.folder = Path(folder)
        layout = shard_layout(tensors, max_shard_bytes, shard_names)
        self.shards: list[str] = list(layout)
        self.weight_map = {t.name: file for file, group in layout.items() for t in group}
        self.total_bytes = sum(_nbytes(t.dtype, t.shape) for t in tensors)
        self._slots: dict[str, tuple[OutputTensor, int, int]] = {}  # name -> (plan entry, fd, absolute offset)
        self._fds: list[int] = []
        self._written: dict[str, list[tuple[int, int]]] = {}  # name -> byte ranges written so far
        self._blocks: dict[str, list[tuple[int, int, int, int]]] = {}  # name -> (row, col, rows, cols) written
        self._lock = threading.Lock()
        try:
            for file, group in layout.items():
                if files is not None and file not in files:
                    continue
                with _os_errors(OutputError, f"cannot create {self.folder / file}",
                                "write into a fresh folder with enough free space and write permission"):
                    self.folder.mkdir(parents=True, exist_ok=True)
                    self._fds.append(os.open(self.folder / file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644))
                    self._layout(self._fds[-1], group, metadata)
        except BaseException:
            self._release()
            raise

    def _layout(self, fd: int, group: list[OutputTensor], metadata: dict[str, str] | None) -> None:
        # Largest element size first keeps every tensor aligned without gaps, as safetensors does.
        group = sorted(group, key=lambda t: -DTYPE_SIZES[t.dtype])
        header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata is not None else {}
        bounds = list(accumulate((_nbytes(t.dtype, t.shape) for t in group), initial=0))
        for t, begin, end in zip(group, bounds, bounds[1:]):
            header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [begin, end]}
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        _pwrite_all(fd, memoryview(len(raw).to_bytes(8, "little") + raw), 0)
        os.ftruncate(fd, 8 + len(raw) + bounds[-1])
        self._slots.update((t.name, (t, fd, 8 + len(raw) + begin)) for t, begin in zip(group, bounds))

    def _slot(self, name: str) -> tuple[OutputTensor, int, int]:
        if not self._fds:
            raise OutputError(f"cannot write tensor {name!r}: the writer is already closed")
        if name not in self._slots:
            raise CoverageError(f"tensor {name!r} is not in the output plan; it cannot be written")
        return self._slots[name]

    def _claim(self, name: str, offset: int, size: int) -> tuple[int, int]:
        """The shard and absolute position of bytes [offset, offset+size) of tensor `name`, checked."""
        want, fd, start = self._slot(name)
        total = _nbytes(want.dtype, want.shape)
        if offset < 0 or offset + size > total:
            raise CoverageError(f"tensor {name!r}: bytes {offset}..{offset + size} fall outside its {total} bytes")
        with self._lock:  # written ranges, sorted and merged when they touch: a new one can only meet neighbours
            if name in self._blocks:
                raise CoverageError(f"tensor {name!r} is written both by blocks and by byte ranges")
            ranges = self._written.setdefault(name, [])
            begin, end = offset, offset + size
            at = bisect.bisect(ranges, (begin, end))
            if (at and ranges[at - 1][1] > begin) or (at < len(ranges) and ranges[at][0] < end):
                raise CoverageError(f"tensor {name!r}: bytes {begin}..{end} are written twice")
            if size:
                if at < len(ranges) and ranges[at][0] == end:
                    end = ranges.pop(at)[1]
                if at and ranges[at - 1][1] == begin:
                    at -= 1
                    begin = ranges.pop(at)[0]
                ranges.insert(at, (begin, end))
        return fd, start + offset

    def write(self, name: str, data: np.ndarray, offset: int = 0) -> None:
        """Write a contiguous array's bytes into tensor `name` at byte `offset` (the whole tensor by default)."""
        raw = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))  # a zero-size array too
        fd, position = self._claim(name, offset, len(raw))
        with _os_errors(OutputError, f"cannot write tensor {name!r} to {self.weight_map[name]}", "check free space"):
            _pwrite_all(fd, raw, position)

    def write_block(self, name: str, data: np.ndarray, at: tuple[int, int]) -> None:
        """Write a 2-D array into 2-D tensor `name` from row `at[0]`, column `at[1]`, through a shared map of the
        shard: a block of columns costs a few calls, not one per row. The block's span of the file is allocated first,
        so a full disk is an OutputError here rather than a crash (SIGBUS) in the middle of a mapped copy."""
        want, fd, start = self._slot(name)
        (row, col), (rows, cols), width = at, data.shape, DTYPE_SIZES[want.dtype]
        if len(want.shape) != 2 or data.ndim != 2 or data.itemsize != width:
            raise CoverageError(f"tensor {name!r} {want.dtype} {list(want.shape)}: cannot write a block of "
                                f"{data.dtype} {list(data.shape)}")
        if row < 0 or col < 0 or row + rows > want.shape[0] or col + cols > want.shape[1]:
            raise CoverageError(f"tensor {name!r} {list(want.shape)}: block {list(data.shape)} at {list(at)} "
                                "falls outside it")
        with self._lock:
            if name in self._written:
                raise CoverageError(f"tensor {name!r} is written both by byte ranges and by blocks")
            blocks = self._blocks.setdefault(name, [])
            for r, c, h, w in blocks:
                if r < row + rows and row < r + h and c < col + cols and col < c + w:
                    raise CoverageError(f"tensor {name!r}: block {list(data.shape)} at {list(at)} is written twice")
            if rows and cols:
                blocks.append((row, col, rows, cols))
        if not (rows and cols):
            return
        row_bytes = want.shape[1] * width
        per_map = max(1, _MAP_SPAN // row_bytes)
        with _os_errors(OutputError, f"cannot write tensor {name!r} to {self.weight_map[name]}", "check free space"):
            for top in range(0, rows, per_map):
                end = min(top + per_map, rows)
                first = start + (row + top) * row_bytes + col * width
                last = start + (row + end - 1) * row_bytes + (col + cols) * width
                base = first - first % mmap.ALLOCATIONGRANULARITY
                if hasattr(os, "posix_fallocate"):  # not on macOS, where a full disk may still end in SIGBUS
                    os.posix_fallocate(fd, base, last - base)
                with mmap.mmap(fd, last - base, offset=base) as mapped:
                    window = np.ndarray((end - top, cols), data.dtype, mapped, first - base, (row_bytes, width))
                    window[...] = data[top:end]
                    del window

    def copy(self, name: str, src: TensorInfo, src_offset: int = 0, offset: int = 0, size: int | None = None) -> None:
        """Copy `size` bytes of a source tensor (all of it by default) straight from its file into tensor `name`."""
        size = src.nbytes - src_offset if size is None else size
        if src_offset < 0 or size < 0 or src_offset + size > src.nbytes:
            raise CoverageError(f"{src.file}: tensor {src.name!r} has no bytes {src_offset}..{src_offset + size}")
        fd, position = self._claim(name, offset, size)
        done, begin = 0, src.start + src_offset
        with _os_errors(OutputError, f"cannot copy tensor {name!r} from {src.file} to {self.weight_map[name]}",
                        "check free space"), open(src.file, "rb", buffering=0) as f:
            try:
                while done < size and (n := os.copy_file_range(f.fileno(), fd, min(_CHUNK, size - done),
                                                                 begin + done, position + done)):
                    done += n
            except (AttributeError, OSError) as e:  # no copy_file_range here: fall back to pread/pwrite
                if getattr(e, "errno", errno.ENOSYS) not in _NO_COPY_RANGE:
                    raise
            while done < size and (chunk := os.pread(f.fileno(), min(_CHUNK, size - done), begin + done)):
                _pwrite_all(fd, memoryview(chunk), position + done)
                done += len(chunk)
        if done < size:
            raise FormatError(f"{src.file}: tensor {src.name!r} ends past the end of the file; re-download it")

    def close(self, complete: bool = True) -> None:
        """Close every shard; with `complete`, first fail with CoverageError if any planned tensor is not
        completely written (`complete=False` leaves unwritten ranges as holes, for header-only test files)."""
        missing = [n for n, (want, _, _) in self._slots.items() if self._done(n) != _nbytes(want.dtype, want.shape)]
        try:
            if complete and missing and self._fds:
                raise CoverageError(report("output tensors were never (completely) written", missing,
                                           "the conversion did not produce every planned tensor"))
        finally:
            self._release()

    def _done(self, name: str) -> int:
        """Bytes of tensor `name` written so far (claims never overlap)."""
        width = DTYPE_SIZES[self._slots[name][0].dtype]
        return (sum(end - begin for begin, end in self._written.get(name, ()))
                + sum(h * w * width for _, _, h, w in self._blocks.get(name, ())))

    def _release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close() if exc_type is None else self._release()  # no completeness check while an error propagates


def hf_shard_names(n: int) -> list[str]:
    """Hugging Face shard file names for n shards."""
    return ["model.safetensors"] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]


def write_hf_index(folder: Path, writer: ShardedWriter | dict[str, str], total_bytes: int | None = None) -> None:
    """Write model.safetensors.index.json for output of more than one shard: that of a writer, or a weight map
    (tensor name -> file) and the data bytes of all its tensors."""
    weight_map, total = ((writer.weight_map, writer.total_bytes) if isinstance(writer, ShardedWriter)
                         else (writer, total_bytes))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    path = Path(folder) / "model.safetensors.index.json"
    with _os_errors(OutputError, f"cannot write {path}", "check free space and permissions"):
        if len(set(weight_map.values())) > 1:
            path.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """Parse a byte size such as "5GB", "500MB", "2GiB" or "1048576"."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m and m.group(2).upper()
    if not m or unit not in _UNITS:
        raise ValueError(f"invalid size {text!r}: give bytes or a number with a unit, e.g. 500MB, 5GB or 2GiB")
    value = int(Decimal(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"invalid size {text!r}: it must be at least 1 byte")
    return value
