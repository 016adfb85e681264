"""Property tests of the readers of untrusted files, and of the paths from them into the planner.

The readers: safetensors headers (`read_header`), sharded checkpoints and their index (`read_checkpoint`), lists of
files (`read_files`), HF `config.json` (`read_config`) and native `metadata.yaml` (`read_metadata`); and through the
public API, `open_checkpoint`, `plan` and `inspect` on real checkpoint folders (a tiny Llama written by
`synth.write_hf` and converted to native) with one file replaced by generated content.

For every generated input, every call runs under `guarded`, which asserts:

1. the call returns a correct result (each section says what correct means for its reader), or raises a
   `WeightportError` with a non-empty message, which the command prints as a clean message;
2. it raises no other exception (any other is a crash with a traceback);
3. it opens no file and lists no folder outside the checkpoint folder (`sys.addaudithook`: the `open`, `os.listdir`
   and `os.scandir` events, paths compared lexically, so a symlink inside the folder may point anywhere, as the HF
   cache's do); a valid safetensors file beside each folder is the bait that `../x.safetensors`, absolute paths and
   `a/../../x.safetensors` reach;
4. its memory is bounded: the call runs under `RLIMIT_DATA` set to what the process has already mapped plus 16 MiB
   plus 64 bytes per input byte, so a reader that expands an input (a YAML alias bomb, a count of 10**9 layers)
   fails with MemoryError in that example instead of taking the machine down; and it ends within 10 s (SIGALRM), for
   blow-ups that spin without allocating. Why not tracemalloc: it slows PyYAML's scanner 15 times (1.1 s -> 16 s on
   a 1000-deep flow sequence) and only measures after the fact, so it cannot stop a runaway; why not a subprocess
   per input under RLIMIT_AS: a fresh interpreter pays its imports (weightport alone 0.3 s) for calls that take
   milliseconds, hundreds of times, and RLIMIT_AS counts the address space torch and numpy reserve, not what a call
   uses. RLIMIT_DATA counts only private writable memory, costs nothing per call and stops the runaway at once.

The runs are derandomized (the same examples every time). Each failure hypothesis found is pinned, minimized, in a
table of the failures it found (HEADER_FAILURES, CONFIG_FAILURES, METADATA_FAILURES, NATIVE_FAILURES; ids H*, C*,
M*, N*; all fixed for issue 23): as an `@example` of the test that found it, and as its own case of a
`test_known_*_failure` test, so that a regression shows on its own (`-k N6`). While a pinned example fails,
hypothesis reports it without generating more: fix it, and the test goes on to generate.
`python -m pytest tests/test_fuzz_readers.py --hypothesis-show-statistics` shows how many examples ran and, as
events, how many calls accepted or refused their input.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st
from safetensors import deserialize, safe_open
from safetensors.torch import save, save_file

import weightport
from weightport import synth, tools
from weightport.core import layouts
from weightport.errors import WeightportError
from weightport.io.hf_config import read_config
from weightport.io.safetensors import read_checkpoint, read_files, read_header
from weightport.native.checkpoint import read_metadata

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# Bytes per element of every safetensors dtype (from the format's specification, not from weightport).
ELEMENT_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F8_E4M3FNUZ": 1,
                 "F8_E5M2FNUZ": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
                 "I64": 8, "U64": 8, "F64": 8, "C64": 8}

# ---------------------------------------------------------------------------------------------------------------
# The guard: reads outside the folder, memory, time

MEMORY_SLACK = 16 * 2**20  # bytes a call may map beyond what the process holds, plus PER_INPUT_BYTE per input byte
PER_INPUT_BYTE = 64
TIME_LIMIT = 10.0  # seconds
# Where a call may open files besides its folder: Python and the installed packages (a module imported on first
# use), and weightport's own source.
LIBRARY_ROOTS = tuple(dict.fromkeys(os.path.normpath(os.path.abspath(p)) for p in (
    sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, Path(weightport.__file__).parent)))

_opened: list[str] | None = None  # paths opened or listed while a guarded call runs


def _audit(event_name: str, args: tuple) -> None:
    if _opened is None or event_name not in ("open", "os.listdir", "os.scandir"):
        return
    path = args[0] if args else None
    if path is None or isinstance(path, int):  # an open file descriptor: its path was checked when it was opened
        return
    try:
        _opened.append(os.path.normpath(os.path.abspath(os.fsdecode(path))))
    except (TypeError, ValueError):
        _opened.append(repr(path))


sys.addaudithook(_audit)  # an audit hook cannot be removed: it records only while `_opened` is a list


class Runaway(BaseException):
    """The guarded call ran past TIME_LIMIT (a BaseException, so that no `except Exception` in a reader hides it)."""


def _alarm(signum: int, frame: object) -> None:
    raise Runaway(f"still running after {TIME_LIMIT} s")


def _mapped_data() -> int | None:
    """The process's data size as RLIMIT_DATA counts it (VmData: private writable mappings), in bytes; None where
    the system does not say (not Linux: there the memory bound is not checked)."""
    status = Path("/proc/self/status")
    found = re.search(r"VmData:\s+(\d+) kB", status.read_text()) if status.exists() else None
    return int(found.group(1)) * 1024 if found else None


def _inside(path: str, folder: Path) -> bool:
    folder_text = os.path.normpath(os.path.abspath(folder))
    return os.path.commonpath([path, folder_text]) == folder_text if os.path.isabs(path) else False


def guarded(read: Callable, *args: Any, folder: Path, size: int) -> Any:
    """Call `read(*args)` under the guard (see the module's docstring): its result, or None where it refused the input
    with a WeightportError (whose message must not be empty). Fails for any other exception (a MemoryError or a
    Runaway as unbounded memory or time) and for a path opened or listed outside `folder`."""
    global _opened
    name = getattr(read, "__name__", repr(read))
    opened: list[str] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    mapped = _mapped_data()
    cap = soft if mapped is None else mapped + MEMORY_SLACK + PER_INPUT_BYTE * size
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        try:
            _opened = opened
            resource.setrlimit(resource.RLIMIT_DATA, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
            signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
            result, error = read(*args), None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
            _opened = None
            signal.signal(signal.SIGALRM, previous)
    except WeightportError as err:
        result, error = None, err
    except MemoryError as err:
        traceback.clear_frames(err.__traceback__)  # let go of what the call had allocated
        raise AssertionError(f"{name}: unbounded memory, MemoryError past "
                             f"{(MEMORY_SLACK + PER_INPUT_BYTE * size) >> 20} MiB for a {size}-byte input") from err
    except Runaway as err:
        traceback.clear_frames(err.__traceback__)
        raise AssertionError(f"{name}: unbounded time, {err} for a {size}-byte input") from err
    outside = [p for p in opened if not _inside(p, folder) and not any(_inside(p, Path(r)) for r in LIBRARY_ROOTS)]
    assert not outside, f"{name} opened {outside}, outside {folder}"
    if error is not None:
        assert str(error).strip(), f"{name}: {type(error).__name__} without a message"
        note(f"{name}: refused ({type(error).__name__})")
        return None
    note(f"{name}: accepted")
    return result


def note(text: str) -> None:
    """An event for --hypothesis-show-statistics (outside hypothesis, nothing)."""
    if currently_in_test_context():
        event(text)


def same(a: Any, b: Any) -> bool:
    """a == b for parsed documents that may be deep, share parts or contain themselves (YAML aliases): each pair of
    containers is compared once, without recursion; NaN equals NaN; mapping keys compare by repr, in order."""
    seen: set[tuple[int, int]] = set()
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if type(x) is not type(y):
            return False
        if isinstance(x, (dict, list)):
            if (id(x), id(y)) in seen:
                continue
            seen.add((id(x), id(y)))
            if isinstance(x, dict):
                if [repr(k) for k in x] != [repr(k) for k in y]:
                    return False
                stack += zip(x.values(), y.values())
            elif len(x) != len(y):
                return False
            else:
                stack += zip(x, y)
        elif x != y:
            return False
    return True


def tree_size(doc: Any, limit: int = 100_000) -> int:
    """The number of nodes of `doc` written out as a tree (a shared part counts each time it appears), up to
    `limit`; a cycle counts as `limit`."""
    count, stack = 0, [(doc, ())]
    while stack and count < limit:
        node, ancestors = stack.pop()
        count += 1
        if isinstance(node, (dict, list)):
            if id(node) in ancestors:
                return limit
            children = node.values() if isinstance(node, dict) else node
            stack += [(child, ancestors + (id(node),)) for child in children]
    return count


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ---------------------------------------------------------------------------------------------------------------
# read_header: correct means what the reference reader (`safetensors`) reads. Where it refuses a file, read_header
# refuses it; where it accepts one whose dtypes weightport supports, read_header returns the same tensors (names,
# dtypes, shapes and bytes) and the same __metadata__, and every byte range lies in the data section, sized by
# dtype and shape, without overlaps.


def check_infos(path: Path, infos: dict) -> None:
    """The tensors read from one file are safe to load: inside the data section, sized by dtype and shape, and
    not overlapping."""
    raw = path.read_bytes()
    data_start = 8 + int.from_bytes(raw[:8], "little")
    for name, info in infos.items():
        assert info.name == name and Path(info.file) == path
        assert info.dtype in ELEMENT_SIZES, info
        assert all(type(d) is int and d >= 0 for d in info.shape), info
        assert data_start <= info.start <= info.end <= len(raw), info
        assert info.end - info.start == ELEMENT_SIZES[info.dtype] * math.prod(info.shape), info
    ranges = sorted((i.start, i.end) for i in infos.values() if i.end > i.start)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(ranges, ranges[1:])), ranges


def reference(path: Path) -> tuple[dict, dict] | str:
    """What the reference reader makes of a file: ({name: (dtype, shape, bytes)}, metadata), or its error message
    where it refuses it (any exception of the reference reader is its refusal)."""
    try:
        tensors = {name: (t["dtype"], list(t["shape"]), bytes(t["data"])) for name, t in
                   deserialize(path.read_bytes())}
        with safe_open(path, "np") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - the reference's own error types are not the question
        return f"{type(err).__name__}: {err}"
    return tensors, metadata


def read_file(folder: Path, content: bytes) -> None:
    """Write `content` as a .safetensors file and check what read_header makes of it against the reference."""
    path = folder / "fuzz.safetensors"
    path.write_bytes(content)
    result = guarded(read_header, path, folder=folder, size=len(content))
    expected = reference(path)
    if result is None:
        assert isinstance(expected, str) or not {d for d, _, _ in expected[0].values()} <= set(ELEMENT_SIZES), \
            f"refused, but the reference reader reads it: {expected}"
        return
    assert not isinstance(expected, str), f"accepted, but the reference reader refuses it ({expected})"
    infos, metadata = result
    check_infos(path, infos)
    raw = path.read_bytes()
    got = {name: (i.dtype, list(i.shape), raw[i.start:i.end]) for name, i in infos.items()}
    assert got == expected[0], f"tensors differ from the reference's: {got} != {expected[0]}"
    assert isinstance(metadata, dict) and metadata == expected[1], f"{metadata!r} != {expected[1]!r}"


def valid_file() -> bytes:
    """A small valid safetensors file, written by the reference implementation, with several dtypes."""
    g = torch.Generator().manual_seed(0)
    return save({
        "embed": torch.randn(4, 3, generator=g), "norm": torch.ones(3, dtype=torch.bfloat16),
        "ids": torch.arange(5), "mask": torch.tensor([[True, False], [False, True]]),
        "empty": torch.zeros(0, 3, dtype=torch.float16), "scalar": torch.tensor(2.5, dtype=torch.float64),
    }, metadata={"format": "pt"})


VALID = valid_file()
HEADER_END = 8 + int.from_bytes(VALID[:8], "little")


def with_length(header: bytes) -> bytes:
    """A safetensors file made of `header` and its length prefix (no data)."""
    return len(header).to_bytes(8, "little") + header


def pinned(argument: str, *inputs: object) -> Callable:
    """Pin `inputs` (failures found, from the tables below) as @examples of a hypothesis test's `argument`."""
    def pin(test: Callable) -> Callable:
        for value in reversed(inputs):
            test = example(**{argument: value})(test)
        return test
    return pin


ONE_BYTE = b'"dtype":"U8","shape":[1],"data_offsets":[0,1]'
# Failures of read_header found by the tests below (minimized, fixed): files it accepted and the reference refuses.
HEADER_FAILURES = {
    "H1-data-past-the-last-tensor": with_length(b"{}") + b"\x00",
    "H1-data-before-the-first-tensor": with_length(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}') + b"\0\0",
    "H2-metadata-not-a-mapping": with_length(b'{"__metadata__":false}'),
    "H3-metadata-twice": with_length(b'{"__metadata__":{},"__metadata__":{}}'),
    "H3-a-field-twice": with_length(b'{"a":{"dtype":"U8",' + ONE_BYTE + b"}}") + b"\x00",
    "H4-a-tensor-twice-the-first-invalid": with_length(b'{"a":{},"a":{' + ONE_BYTE + b"}}") + b"\x00",
    "H5-NaN": with_length(b'{"a":{' + ONE_BYTE + b',"x":NaN}}') + b"\x00",
    "H6-a-lone-surrogate-in-a-name": with_length(b'{"\\ud800":{' + ONE_BYTE + b"}}") + b"\x00",
    "H7-minus-zero": with_length(b'{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,-0]}}'),
    "H8-a-dimension-past-64-bits": with_length(
        b'{"a":{"dtype":"U8","shape":[0,18446744073709551616],"data_offsets":[0,0]}}'),
    "H8-a-size-past-64-bits": with_length(
        b'{"a":{"dtype":"U8","shape":[18446744073709551615,2,0],"data_offsets":[0,0]}}'),
}
H1, H2 = HEADER_FAILURES["H1-data-past-the-last-tensor"], HEADER_FAILURES["H2-metadata-not-a-mapping"]


@pytest.mark.parametrize("content", HEADER_FAILURES.values(), ids=HEADER_FAILURES.keys())
def test_known_header_failure(folder, content):
    """Each known failure of read_header as its own case, so that each fix shows on its own."""
    read_file(folder, content)


def test_the_valid_file_is_accepted(folder):
    path = folder / "valid.safetensors"
    path.write_bytes(VALID)
    infos, _ = read_header(path)
    check_infos(path, infos)
    assert sorted(infos) == ["embed", "empty", "ids", "mask", "norm", "scalar"]
    read_file(folder, VALID)


@FUZZ
@given(content=st.one_of(
    st.binary(max_size=300),
    # a length prefix that fits, so that the bytes after it are parsed as the header
    st.tuples(st.binary(max_size=200), st.binary(max_size=64)).map(
        lambda p: len(p[0]).to_bytes(8, "little") + p[0] + p[1]),
))
def test_random_bytes(folder, content):
    read_file(folder, content)


@st.composite
def mutated(draw) -> bytes:
    """The valid file after 1-4 random edits: bytes of the header flipped, bytes inserted or deleted, the length
    prefix changed, the file truncated anywhere."""
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "flip", "insert", "delete", "length", "truncate"]))
        if kind == "flip" and len(data) > 8:
            at = draw(st.integers(8, min(len(data), HEADER_END) - 1))
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            at = draw(st.integers(min(8, len(data)), len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and len(data) > 8:
            at = draw(st.integers(8, len(data) - 1))
            del data[at:at + draw(st.integers(1, 16))]
        elif kind == "length":
            n = int.from_bytes(data[:8], "little")
            new = draw(st.one_of(st.integers(max(0, n - 16), n + 16), st.integers(0, 2**64 - 1)))
            data[:8] = new.to_bytes(8, "little")
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
    return bytes(data)


@FUZZ
@example(content=VALID + b"\x00")  # H1
@given(content=mutated())
def test_mutated_valid_file(folder, content):
    read_file(folder, content)


JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6)
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=8)


@st.composite
def header_entry(draw, odd_dtypes: st.SearchStrategy) -> object:
    """One tensor entry: mostly well-formed (offsets that fit the dtype and shape, or miss by a byte, or are
    reversed), with any of its fields possibly replaced by arbitrary JSON (the dtype by `odd_dtypes`)."""
    dtype = draw(st.sampled_from(sorted(ELEMENT_SIZES) + ["Q4_K", "f32", ""]))
    shape = draw(st.lists(st.integers(-1, 5), max_size=3))
    start = draw(st.integers(-4, 64))
    size = ELEMENT_SIZES.get(dtype, 4) * math.prod(shape)
    offsets = draw(st.sampled_from([[start, start + size], [start, start + size + 1], [start + size, start]]))
    entry = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
    for key in draw(st.sets(st.sampled_from(sorted(entry)))):
        entry[key] = draw(odd_dtypes if key == "dtype" else JSON)
    return draw(st.sampled_from([entry, {k: v for k, v in entry.items() if k != "shape"}, draw(JSON)]))


@st.composite
def json_header_file(draw, odd_dtypes: st.SearchStrategy = JSON_SCALARS) -> bytes:
    """A length prefix, a JSON header (a mapping of tensor entries and maybe __metadata__, or any JSON) and
    0-160 data bytes."""
    header = draw(st.one_of(st.dictionaries(st.text(max_size=6), header_entry(odd_dtypes), max_size=4), JSON))
    if isinstance(header, dict) and draw(st.booleans()):
        header["__metadata__"] = draw(st.one_of(st.dictionaries(st.text(max_size=4), st.text(max_size=4)), JSON))
    return with_length(json.dumps(header).encode()) + draw(st.binary(max_size=160))


@FUZZ
@pinned("content", H1, H2)
@given(content=json_header_file())
def test_random_json_header(folder, content):
    read_file(folder, content)


@FUZZ
@example(content=with_length(b'{"": {"dtype": [], "shape": [], "data_offsets": [0, 2]}}'))
@example(content=H1)
@given(content=json_header_file(odd_dtypes=JSON))
def test_random_json_header_with_any_json_dtype(folder, content):
    read_file(folder, content)


# Number tokens as JSON text: those Python's json reads otherwise than the reference's (serde) does.
NUMBER_TOKENS = ["0", "1", "2", "4", "8", "-0", "-1", "1e0", "1.0", "4.0", "18446744073709551615",
                 "18446744073709551616", "4294967296", "NaN", "Infinity", "-Infinity", "9" * 4301]


@st.composite
def tokenized_header(draw) -> bytes:
    """A header written token by token: tensors laid out back to back (so that most are valid), then changed the
    ways json.dumps cannot write: a name or field given twice, __metadata__ twice or not a mapping, numbers as
    tokens Python and the reference read differently (-0, 1e0, NaN, over 64 bits, over 4300 digits), a name with
    a lone surrogate escape, padding; and data bytes exactly covering the tensors, or a byte more or less."""
    pairs: list[tuple[str, str]] = []
    offset = 0
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["a", "b", "c", "", "__metadata__", "\\ud800", "\\u0061"]))
        dtype = draw(st.sampled_from(["F32", "BF16", "U8", "I64", "F4", "Q4_K"]))
        shape = draw(st.lists(st.integers(0, 3), max_size=2))
        size = ELEMENT_SIZES.get(dtype, 1) * math.prod(shape)
        fields = [("dtype", json.dumps(dtype)), ("shape", json.dumps(shape)),
                  ("data_offsets", json.dumps([offset, offset + size]))]
        offset += size
        if draw(st.booleans()):  # a field given twice, a number token, an extra field
            at = draw(st.integers(0, 2))
            change = draw(st.sampled_from(["twice", "number", "extra", "drop"]))
            if change == "twice":
                fields.append(fields[at])
            elif change == "number":  # the last number of the shape or the offsets written as a token
                key, numbers = fields[1 + at % 2][0], json.loads(fields[1 + at % 2][1])
                tokens = [*map(str, numbers[:-1]), draw(st.sampled_from(NUMBER_TOKENS))]
                fields[1 + at % 2] = (key, "[" + ",".join(tokens) + "]")
            elif change == "extra":
                fields.append(("x", draw(st.sampled_from(NUMBER_TOKENS + ['"y"', "null", "[]", "{}"]))))
            else:
                del fields[at]
        pairs.append((name, "{" + ",".join(f'"{k}":{v}' for k, v in fields) + "}"))
    for _ in range(draw(st.integers(0, 2))):
        pairs.insert(draw(st.integers(0, len(pairs))), ("__metadata__", draw(st.sampled_from(
            ['{"format":"pt"}', '{"k":"a","k":"b"}', '{}', 'null', '""', "0", "false", "[]", '{"k":1}',
             '{"k":NaN}']))))
    if pairs and draw(st.booleans()):  # a tensor given twice
        pairs.append(pairs[draw(st.integers(0, len(pairs) - 1))])
    text = "{" + ",".join(f'"{k}":{v}' for k, v in pairs) + "}"
    text = draw(st.sampled_from(["", " ", "\n", "\t"])) + text + draw(st.sampled_from(["", " " * 3, "\x00"]))
    data = offset + draw(st.sampled_from([0, 0, 0, 1, -1]))
    return with_length(text.encode("utf-8", "surrogatepass")) + bytes(max(0, data))


@FUZZ
@pinned("content", *HEADER_FAILURES.values())
@given(content=tokenized_header())
def test_tokenized_header(folder, content):
    read_file(folder, content)


@settings(FUZZ, max_examples=20)
@example(depth=5_000)
@given(depth=st.integers(1, 5_000))
def test_deeply_nested_header(folder, depth):
    read_file(folder, with_length(("[" * depth + "]" * depth).encode()))


# ---------------------------------------------------------------------------------------------------------------
# read_checkpoint: a folder of real shards, with an index file that is anything at all. Correct means: every tensor
# the index names, read from the file the index names for it, that file inside the folder; and each file's tensors
# as read_header reads them.

SHARD_FILES = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
BAIT = "<absolute path of the bait>"  # replaced, in every generated text, by the absolute path of the bait file
OTHER_FILES = ["broken.safetensors", "missing.safetensors", "sub", "../outside.safetensors", "/etc/passwd", "",
               ".", "./" + SHARD_FILES[0], SHARD_FILES[0] + "/", "sub/../" + SHARD_FILES[1], "model.safetensors",
               "a/../../outside.safetensors", "sub/../../outside.safetensors", "./../outside.safetensors", BAIT,
               "sub/../" + BAIT]
TENSORS = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """a, b in shard 1 and c in shard 2; plus a file that is not safetensors, a subfolder, and a valid
    safetensors file just outside the folder (the bait)."""
    root = tmp_path_factory.mktemp("sharded")
    folder = root / "ckpt"
    folder.mkdir()
    save_file({"a": torch.zeros(2, 3), "b": torch.ones(4, dtype=torch.bfloat16)}, folder / SHARD_FILES[0])
    save_file({"c": torch.arange(3)}, folder / SHARD_FILES[1])
    save_file({"d": torch.zeros(2)}, root / "outside.safetensors")
    (folder / "broken.safetensors").write_bytes(b"\xff" * 12)
    (folder / "sub").mkdir()
    return folder


def bait_text(text: str, bait: Path) -> str:
    return text.replace(BAIT, str(bait))


def read_index(folder: Path, content: bytes) -> dict | None:
    """Write `content` as the index and check what read_checkpoint makes of it; returns that."""
    content = bait_text(content.decode("utf-8", "surrogateescape"), folder.parent / "outside.safetensors").encode(
        "utf-8", "surrogateescape")
    (folder / "model.safetensors.index.json").write_bytes(content)
    tensors = guarded(read_checkpoint, folder, folder=folder, size=len(content))
    if tensors is None:
        return None
    weight_map = json.loads(content.decode("utf-8"))["weight_map"]
    assert set(tensors) == set(weight_map), f"read {sorted(tensors)}, the index names {sorted(weight_map)}"
    for name, info in tensors.items():
        file = Path(info.file).resolve()
        assert folder.resolve() in file.parents, f"{name} read from {file}, outside {folder}"
        assert (folder / weight_map[name]).resolve() == file, f"{name} read from {file}, not {weight_map[name]}"
        check_infos(Path(info.file), {k: v for k, v in tensors.items() if Path(v.file).resolve() == file})
        assert read_header(info.file)[0][name] == info
    return tensors


WEIGHT_MAP = st.dictionaries(st.one_of(st.sampled_from(TENSORS), st.text(max_size=4)),
                             st.one_of(st.sampled_from(SHARD_FILES + OTHER_FILES), st.text(max_size=8), JSON),
                             max_size=5)
INDEX_DOC = st.one_of(
    st.fixed_dictionaries({"weight_map": WEIGHT_MAP}),
    st.fixed_dictionaries({"metadata": JSON, "weight_map": WEIGHT_MAP}),
    st.fixed_dictionaries({"weight_map": JSON}),
    JSON,
)
# The exact index of the shards, so that "accepted" is a frequent outcome too.
GOOD_INDEX = {"metadata": {"total_size": 44}, "weight_map": {"a": SHARD_FILES[0], "b": SHARD_FILES[0],
                                                              "c": SHARD_FILES[1]}}


@FUZZ
@example(content=json.dumps(GOOD_INDEX).encode())
@given(content=st.one_of(
    INDEX_DOC.map(lambda doc: json.dumps(doc).encode()),
    st.just(GOOD_INDEX).map(lambda doc: json.dumps(doc).encode()),
    # the good index with one tensor moved to another file, maybe outside
    st.tuples(st.sampled_from(TENSORS), st.sampled_from(SHARD_FILES + OTHER_FILES)).map(
        lambda p: json.dumps({"weight_map": {**GOOD_INDEX["weight_map"], p[0]: p[1]}}).encode()),
    st.text(max_size=40).map(str.encode),
    st.binary(max_size=40),
))
def test_random_index(shards, content):
    read_index(shards, content)


@settings(FUZZ, max_examples=20)
@example(depth=5_000)
@given(depth=st.integers(1, 5_000))
def test_deeply_nested_index(shards, depth):
    read_index(shards, ('{"weight_map": ' + "[" * depth + "]" * depth + "}").encode())


@pytest.mark.parametrize("text", [
    pytest.param('{"weight_map": {"a": "' + "1" * 5000 + '"}, "metadata": {"total_size": ' + "9" * 5000 + "}}",
                 id="huge-integer"),
    pytest.param('{"weight_map": {"a": "x", "a": "' + SHARD_FILES[0] + '"}}', id="duplicate-key"),
    pytest.param('{"weight_map": {"d": "../outside.safetensors"}}', id="parent"),
    pytest.param('{"weight_map": {"d": "' + BAIT + '"}}', id="absolute"),
])
def test_index_edge_cases(shards, text):
    read_index(shards, text.encode())


# ---------------------------------------------------------------------------------------------------------------
# read_files: correct means the union of the tensors of the files, each as read_header reads it; a name in two
# files (or a file listed twice) is refused.

@FUZZ
@given(names=st.lists(st.sampled_from(SHARD_FILES + ["broken.safetensors", "missing.safetensors", "sub"]),
                      max_size=4))
def test_read_files(shards, names):
    paths = [shards / name for name in names]
    tensors = guarded(read_files, paths, folder=shards, size=0)
    if tensors is None:
        return
    assert len(set(paths)) == len(paths)
    expected = {}
    for path in paths:
        expected |= read_header(path)[0]
    assert tensors == expected


# ---------------------------------------------------------------------------------------------------------------
# read_config: correct means the JSON object the UTF-8 text holds, as `json.loads` reads it (as transformers does:
# NaN and Infinity are read, a key given twice takes its last value); anything else is refused.

def expected_config(content: bytes) -> dict | None:
    try:
        config = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return config if isinstance(config, dict) else None


def check_config(folder: Path, content: bytes) -> dict | None:
    (folder / "config.json").write_bytes(content)
    config = guarded(read_config, folder / "config.json", folder=folder, size=len(content))
    expected = expected_config(content)
    if expected is None:
        assert config is None, f"accepted, but not a JSON object: {content[:200]!r} -> {config!r}"
    else:
        assert config is not None, f"refused, but a JSON object: {content[:200]!r}"
        assert same(config, expected)
    return config


HUGE_DIGITS = "9" * 4301  # Python refuses to read an int of more than 4300 digits (a plain ValueError)
HUGE = "HUGE_INTEGER"  # a placeholder, written as HUGE_DIGITS in the generated text


@dataclass(frozen=True)
class Bomb:
    """A value of `levels` nested containers each holding `width` references to the one below: small as YAML
    (aliases), width**levels leaves written out. The repr stays small (hypothesis prints examples)."""

    levels: int = 9
    width: int = 9
    mapping: bool = True

    def build(self) -> object:
        node: object = {"a": 1} if self.mapping else ["a"]
        for _ in range(self.levels):
            node = {f"k{i}": node for i in range(self.width)} if self.mapping else [node] * self.width
        return node


@dataclass(frozen=True)
class Cycle:
    """A container that holds itself (YAML can write it with an anchor and an alias); `around` is merged in."""

    around: tuple = ()
    mapping: bool = True

    def build(self) -> object:
        if self.mapping:
            node = dict(self.around)
            node["self"] = node
            return node
        node = list(self.around)
        node.append(node)
        return node


def materialize(value: Any) -> Any:
    """The value with Bomb and Cycle tokens built (only YAML can write those)."""
    if isinstance(value, (Bomb, Cycle)):
        return value.build()
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialize(v) for v in value]
    return value


# Values that readers and the planner must survive: counts past any model, negative, past 64 bits and past
# Python's int limit (HUGE), non-finite floats, format and layout names, file names reaching outside the folder.
SPECIAL_NUMBERS = [0, -1, 1, 2, 3, 10**9, 2**31, 2**63, 2**64, -(2**63) - 1, 10**400, 0.5, -0.0, 1e300,
                   float("inf"), float("nan"), HUGE]
WORDS = ["llama", "mistral", "mixtral", "gemma4", "gemma4_vlm", "mistral3", "llava", "apriel2", "gpt", "multimodal",
         "fixed", "pattern", "attention", "stochastic", "mamba", "transformers4", "transformers5", "transformers5.15",
         "silu", "default", "yarn", "float32", "bfloat16", "LlamaForCausalLM", "../x.safetensors",
         "../../x.safetensors", BAIT, "modeling_x.Foo", "", " ", "\x00"]
LEAF = st.one_of(st.none(), st.booleans(), st.sampled_from(SPECIAL_NUMBERS), st.integers(-3, 300),
                 st.sampled_from(WORDS), st.text(max_size=5))
VALUE = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["type", "a", "0", "model_type", "rope_type", "self"]) | st.text(max_size=3), inner, max_size=3),
    max_leaves=6)


def render_json(doc: Any, bait: Path, tail: str = "") -> bytes:
    """`doc` as JSON text (NaN and Infinity as Python writes them), HUGE written out, BAIT made absolute, `tail`
    (more members) added before the closing brace of an object."""
    text = json.dumps(doc)
    if tail and text.endswith("}"):
        text = text[:-1] + (", " if text != "{}" else "") + tail + "}"
    return bait_text(text.replace(json.dumps(HUGE), HUGE_DIGITS), bait).encode("utf-8", "surrogatepass")


def put(doc: dict, path: tuple, value: Any) -> dict:
    """A copy of `doc` with `value` at `path` (mappings made on the way where missing or not mappings); with value
    DELETE, the key removed."""
    doc = json.loads(json.dumps(doc))
    node = doc
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if isinstance(value, str) and value == DELETE:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return doc


DELETE = "<delete>"
CONFIG_KEYS = sorted(synth.tiny_llama()) + ["layer_types", "auto_map", "text_config", "num_local_experts",
                                              "sliding_window", "torch_dtype", "transformers_version", "rope_scaling",
                                              "rope_theta", "new_key"]
CONFIG_PATHS = [(k,) for k in CONFIG_KEYS] + [("rope_parameters", "rope_theta"), ("rope_parameters", "rope_type"),
                                              ("rope_parameters", "factor"), ("text_config", "num_hidden_layers")]
# num_hidden_layers and the like, set to what no model has
COUNT_KEYS = ["num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
              "vocab_size", "intermediate_size"]


@st.composite
def config_edit(draw) -> tuple:
    """An edit of the tiny Llama's config.json: ("set", path, value), ("delete", path), ("tail", text) for members
    json.dumps cannot write (a key given twice, an integer of over 4300 digits), or ("whole", value)."""
    kind = draw(st.sampled_from(["set", "set", "set", "count", "delete", "tail", "whole"]))
    if kind == "count":
        return ("set", (draw(st.sampled_from(COUNT_KEYS)),), draw(st.sampled_from(SPECIAL_NUMBERS)))
    if kind == "set":
        return ("set", draw(st.sampled_from(CONFIG_PATHS)), draw(VALUE))
    if kind == "delete":
        return ("delete", draw(st.sampled_from(CONFIG_PATHS)))
    if kind == "tail":
        key = draw(st.sampled_from(COUNT_KEYS + ["model_type", "architectures"]))
        return ("tail", f'"{key}": ' + draw(st.sampled_from(["1", "-1", "2", HUGE_DIGITS, "NaN", '"llama"', "[]"])))
    return ("whole", draw(VALUE))


def config_text(edit: tuple, bait: Path) -> bytes:
    base = synth.tiny_llama()
    if edit[0] == "set":
        return render_json(put(base, edit[1], edit[2]), bait)
    if edit[0] == "delete":
        return render_json(put(base, edit[1], DELETE), bait)
    if edit[0] == "tail":
        return render_json(base, bait, edit[1])
    return render_json(edit[1], bait)


def test_the_valid_config_is_read_as_it_is(folder):
    content = render_json(synth.tiny_llama(), folder)
    assert check_config(folder, content) == synth.tiny_llama()


@FUZZ
@example(content=b'{"a": ' + HUGE_DIGITS.encode() + b"}")  # C1
@given(content=st.one_of(
    st.binary(max_size=100),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
    JSON.map(lambda doc: json.dumps(doc).encode()),
    config_edit().map(lambda edit: config_text(edit, Path("/bait"))),
))
def test_random_config(folder, content):
    check_config(folder, content)


@settings(FUZZ, max_examples=10)
@example(depth=5_000)
@given(depth=st.integers(1, 5_000))
def test_deeply_nested_config(folder, depth):
    check_config(folder, ('{"a": ' + "[" * depth + "]" * depth + "}").encode())


# ---------------------------------------------------------------------------------------------------------------
# read_metadata: YAML-ish text for metadata.yaml

VALID_METADATA = """\
config:
  base_model:
    hidden_size: 64
  type: gpt
fast_llm_version: 0.4.0
format: fast_llm
metadata:
  state_index:
    head.output_weights/weights: model_0.safetensors
model: gpt
"""
KEYS = ["config", "base_model", "type", "fast_llm_version", "format", "metadata", "state_index", "model", "shards",
        "weights", "x", "0"]
# Scalars written unquoted, so that YAML resolves them: versions, nulls, flow collections, dates (real and
# impossible), tags, anchors and aliases, block indicators, document markers, an integer of over 4300 digits.
VALUES = ["", "0.4.0", "0.2.9", "1", "fast_llm", "distributed", "null", "~", "[]", "{}", "[1]", "{a: b}", "gpt",
          "2001-02-03", "2001-02-30", "0x1F", "1e400", ".nan", "!!int x", "!!float x", "!!binary xx", "!!str",
          "!!python/name:os.getcwd", "&a x", "*a", "*b", "|", ">", "'", '"', "-", "? a", "%YAML 1.1", "---", "...",
          HUGE_DIGITS, "&a [*a]", "&a {b: *a}"]
SCALAR = st.one_of(st.sampled_from(VALUES), st.text(max_size=6))
TREE = st.recursive(SCALAR, lambda inner: st.dictionaries(
    st.one_of(st.sampled_from(KEYS), st.text(max_size=4)), inner, min_size=1, max_size=4), max_leaves=10)


def render(node: object, indent: int = 0) -> str:
    """A tree of mappings as block YAML, its scalars written as they are."""
    if not isinstance(node, dict):
        return f" {node}"
    return "".join(f"\n{' ' * indent}{key}:{render(value, indent + 2)}" for key, value in node.items())


@st.composite
def valid_metadata_with_a_change(draw) -> str:
    """VALID_METADATA with one mapping, at any depth, given a random key and value."""
    meta = yaml.safe_load(VALID_METADATA)
    node = meta
    for _ in range(draw(st.integers(0, 3))):
        children = [v for v in node.values() if isinstance(v, dict)]
        if not children:
            break
        node = draw(st.sampled_from(children))
    node[draw(st.one_of(st.sampled_from(sorted(node)), st.sampled_from(KEYS)))] = draw(TREE)
    return render(meta)


def render_yaml(doc: Any, bait: Path) -> str:
    """`doc` as YAML (shared parts and cycles as anchors and aliases), HUGE written out, BAIT made absolute."""
    text = yaml.safe_dump(materialize(doc), sort_keys=False, allow_unicode=True, width=10**6)
    return bait_text(text.replace(HUGE, HUGE_DIGITS), bait)


@st.composite
def valid_metadata_with_a_shared_value(draw) -> str:
    """VALID_METADATA with one value, at any depth, replaced by an alias bomb or a cycle."""
    meta = yaml.safe_load(VALID_METADATA)
    path = draw(st.sampled_from([("config", "base_model", "hidden_size"), ("config", "base_model", "x"),
                                 ("metadata", "state_index"), ("metadata", "weightport"), ("config",), ("x",),
                                 ("fast_llm_version",), ("format",), ("model",)]))
    return render_yaml(put(meta, path, draw(SHARED)), Path("/bait"))


SHARED = st.one_of(st.builds(Bomb, st.integers(1, 9), st.integers(1, 9), st.booleans()),
                   st.builds(Cycle, st.sampled_from([(), (("type", "stochastic"),), (("a", 1),)]), st.booleans()))
YAMLISH = st.one_of(TREE.map(render), valid_metadata_with_a_change(), valid_metadata_with_a_shared_value(),
                    st.text(max_size=60))


def _version(value: object) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(value).split(".")[:3])
    except ValueError:
        return ()


def expected_metadata(text: str) -> dict | None:
    """What read_metadata must make of `text`, by the rules of a native checkpoint's metadata.yaml: plain YAML (no
    tag is constructed, an impossible date, an integer of over 4300 digits or a nesting too deep is an error); a
    mapping whose `config` and `metadata` are mappings; `format` fast_llm or absent; a `fast_llm_version` whose first
    three dotted parts are integers, at least 0.3.0; `config.base_model` a mapping; `metadata.state_index` a non-empty
    mapping of names to file names (strings); `metadata.weightport`, if set, a mapping whose `format` and
    `hf_layout` are strings, `hf_config` a mapping and `carried_tensors` a list of file names inside the folder; at
    most 100,000 values once aliases are expanded (no alias bomb, no document holding itself). Returns the parsed
    document, or None where the text must be refused."""
    try:
        doc = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError):
        return None
    if expanded_values(doc) > 100_000:  # an alias bomb, or a document that holds itself (infinite)
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        return None
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict) or doc.get("format", "fast_llm") != "fast_llm":
        return None
    if _version(doc.get("fast_llm_version")) < (0, 3, 0) or not isinstance(doc["config"].get("base_model"), dict):
        return None
    index = metadata.get("state_index")
    if not isinstance(index, dict) or not index or not all(isinstance(v, str) for v in index.values()):
        return None
    extras = metadata.get("weightport")
    if extras is None:
        return doc
    if not isinstance(extras, dict):
        return None
    kinds = {"format": str, "hf_layout": str, "hf_config": dict, "carried_tensors": list}
    if any(extras.get(key) is not None and not isinstance(extras[key], kind) for key, kind in kinds.items()):
        return None
    return doc if all(a_file_inside(name) for name in extras.get("carried_tensors") or []) else None


def expanded_values(doc: object) -> float:
    """How many values (mappings, lists and scalars) a YAML document holds once its aliases are expanded: shared
    nodes are counted once per place they appear; a node inside itself counts as infinitely many."""
    counted: dict[int, float] = {}

    def count(node: object, inside: frozenset) -> float:
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) in inside:
            return math.inf
        if id(node) not in counted:
            children = node.values() if isinstance(node, dict) else node
            counted[id(node)] = 1 + sum(count(child, inside | {id(node)}) for child in children)
        return counted[id(node)]

    try:
        return count(doc, frozenset())
    except RecursionError:
        return math.inf


def a_file_inside(name: object) -> bool:
    """A relative file name with no empty, `.` or `..` part and no backslash or NUL: it names a file in the folder."""
    return (isinstance(name, str) and bool(name) and "\\" not in name and "\0" not in name
            and all(part not in ("", ".", "..") for part in name.split("/")))


def read_yaml(folder: Path, text: str) -> dict | None:
    """read_metadata refuses `text` with a WeightportError where the rules above refuse it, and otherwise returns
    the document the text holds: a bad input silently accepted, or a good one refused, fails."""
    (folder / "metadata.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    meta = guarded(read_metadata, folder, folder=folder, size=len(text.encode("utf-8", "surrogatepass")))
    expected = expected_metadata(text)
    if expected is None:
        assert meta is None, f"accepted, but should be refused: {text[:300]!r} -> {type(meta)}"
    else:
        assert meta is not None, f"refused, but valid: {text[:300]!r}"
        assert same(meta, expected), text[:300]
    return meta


def test_the_valid_metadata_is_accepted_as_it_is(folder):
    (folder / "metadata.yaml").write_text(VALID_METADATA, encoding="utf-8")
    assert read_metadata(folder) == yaml.safe_load(VALID_METADATA) == expected_metadata(VALID_METADATA)


# Failures of read_metadata found by the test below (fixed): alias bombs that it wrote out.
METADATA_FAILURES = {
    f"M1-an-alias-bomb-as-{key}": render_yaml(put(yaml.safe_load(VALID_METADATA), (key,), Bomb()), Path("/"))
    for key in ("fast_llm_version", "format")
}


@FUZZ
@example(text=" 2001-02-30")
@pinned("text", *METADATA_FAILURES.values())
@given(text=YAMLISH)
def test_random_metadata(folder, text):
    read_yaml(folder, text)


@pytest.mark.parametrize("text", METADATA_FAILURES.values(), ids=METADATA_FAILURES.keys())
def test_known_metadata_failure(folder, text):
    read_yaml(folder, text)


@settings(FUZZ, max_examples=2)  # PyYAML takes 1-2 s to reach its RecursionError
@example(depth=5_000)
@given(depth=st.integers(1, 5_000))
def test_deeply_nested_metadata(folder, depth):
    read_yaml(folder, "[" * depth + "]" * depth)


@pytest.mark.parametrize("text", [
    pytest.param("0: 2001-02-30", id="impossible-date"),
    pytest.param("0: !!int x", id="bad-int-tag"),
    pytest.param("0: !!float x", id="bad-float-tag"),
    pytest.param("fast_llm_version: 0.4.0\nconfig: [1]", id="config-is-a-list"),
    pytest.param(VALID_METADATA + "metadata: [1]", id="metadata-is-a-list"),
    pytest.param("0: " + HUGE_DIGITS, id="huge-integer"),
])
def test_metadata_crashers(folder, text):
    """Each kind of crash of read_metadata (found by test_random_metadata, the AttributeErrors by reading the code)
    as its own case, so that each fix shows on its own: each is refused, with a WeightportError."""
    (folder / "metadata.yaml").write_text(text, encoding="utf-8")
    assert expected_metadata(text) is None
    with pytest.raises(WeightportError, match="metadata.yaml"):
        read_metadata(folder)


# ---------------------------------------------------------------------------------------------------------------
# Through the public API: open_checkpoint, plan and inspect on real checkpoint folders (a tiny Llama), one file
# replaced by generated content. Correct means: what the reader of that file makes of it (read_config,
# read_metadata, read_checkpoint), and the folder's own tensors, are what the checkpoint holds; the plan reads
# exactly the checkpoint's tensors, with their shapes and dtypes, and each step keeps the number of elements; the
# config.json a plan to HF would write is a finite tree of modest size; inspect counts the checkpoint's tensors.
# Each folder has a valid safetensors file beside it (the bait) and the native one an hf_files/ folder, so that
# `hf_files/../../x.safetensors` reaches the bait.


@dataclass(frozen=True, repr=False)
class Models:
    hf: Path  # one model.safetensors; config.json is fuzzed
    sharded: Path  # model-*.safetensors and an index; the index is fuzzed
    native: Path  # metadata.yaml is fuzzed
    config: bytes
    index: bytes
    metadata: str
    bait: Path

    def __repr__(self) -> str:
        return f"Models({self.bait.parent})"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Models:
    root = tmp_path_factory.mktemp("models")
    hf = synth.write_hf(root / "hf", synth.tiny_llama(), seed=0)
    sharded = synth.write_hf(root / "sharded", synth.tiny_llama(), seed=0, max_shard_size=100_000)
    native = root / "native"
    weightport.convert(hf, native)
    (native / "hf_files").mkdir()
    (native / "hf_files" / "tokenizer.json").write_text("{}")
    save_file({"model.embed_tokens.weight": torch.zeros(256, 64)}, root / "x.safetensors")
    for folder in (hf, sharded, native):  # imports and caches outside the guard
        weightport.plan(folder), tools.inspect(folder)
    return Models(hf, sharded, native, (hf / "config.json").read_bytes(),
                  (sharded / "model.safetensors.index.json").read_bytes(), (native / "metadata.yaml").read_text(),
                  root / "x.safetensors")


def folder_tensors(folder: Path) -> dict:
    """The tensors of an HF folder as the reference reader reads them: {name: (dtype, shape)}."""
    out = {}
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "np") as f:
            out |= {n: (f.get_slice(n).get_dtype(), tuple(f.get_slice(n).get_shape())) for n in f.keys()}
    return out


def check_plan(plan: Any, sources: dict[str, tuple]) -> None:
    """The plan reads exactly `sources` ({name: (dtype, shape)}), with their dtypes and shapes, and each step that
    writes keeps the number of elements it reads."""
    read = set()
    for step in plan.steps:
        for ref in step.src:
            assert ref.name in sources, f"the plan reads {ref.name}, which the checkpoint does not hold"
            assert (ref.dtype, tuple(ref.shape)) == sources[ref.name], (ref, sources[ref.name])
            read.add(ref.name)
        if step.dst:
            assert (sum(math.prod(r.shape) for r in step.src) == sum(math.prod(r.shape) for r in step.dst)), step
    assert read == set(sources), f"the plan leaves out {sorted(set(sources) - read)}"


def run_api(folder: Path, size: int) -> tuple:
    """open_checkpoint, plan and inspect of `folder`, each under the guard (None where refused)."""
    return tuple(guarded(call, folder, folder=folder, size=size)
                 for call in (weightport.open_checkpoint, weightport.plan, tools.inspect))


def check_hf(folder: Path, size: int, tensors: dict | None) -> None:
    """The API on an HF folder with one file replaced (`size` bytes): `tensors` ({name: (dtype, shape)}) are what the
    readers make of the folder, None where a reader refuses a file (then every call refuses)."""
    checkpoint, plan, info = run_api(folder, size)
    if tensors is None:
        assert checkpoint is None and plan is None and info is None, "accepted what its reader refuses"
        return
    config = expected_config((folder / "config.json").read_bytes())
    if checkpoint is not None:
        assert checkpoint.side == "hf"
        assert same(checkpoint.hf_config, config)
        assert {n: (t.dtype, t.shape) for n, t in checkpoint.tensors.items()} == tensors
        assert all(_inside(os.path.abspath(t.file), folder) for t in checkpoint.tensors.values())
    if plan is not None:
        assert checkpoint is not None, "planned what open_checkpoint refuses"
        check_plan(plan, tensors)
        assert same(plan.config["weightport"]["hf_config"], config)
    if info is not None:
        assert info["side"] == "hf" and info["tensors"] == len(tensors)
        assert info["parameters"] == sum(math.prod(shape) for _, shape in tensors.values())


def test_the_valid_folders_are_accepted(models):
    for folder in (models.hf, models.sharded, models.native):
        assert all(result is not None for result in run_api(folder, 0))


# Failures through an HF folder found by the test below (minimized, fixed): edits of its config.json.
CONFIG_FAILURES = {
    "C1-an-integer-of-4301-digits": ("set", ("num_hidden_layers",), HUGE),
    "C2-a-list-where-a-rule-looks-a-value-up": ("set", ("hidden_act",), []),
    "C3-a-count-past-64-bits": ("set", ("num_hidden_layers",), 2**63),
    "C4-no-layers": ("set", ("num_hidden_layers",), 0),
    "C5-a-billion-layers": ("set", ("num_hidden_layers",), 10**9),
}


@FUZZ
@pinned("edit", *CONFIG_FAILURES.values())
@given(edit=config_edit())
def test_hf_folder_with_random_config(models, edit):
    check_hf_config(models, edit)


@pytest.mark.parametrize("edit", CONFIG_FAILURES.values(), ids=CONFIG_FAILURES.keys())
def test_known_hf_config_failure(models, edit):
    check_hf_config(models, edit)


def check_hf_config(models: Models, edit: tuple) -> None:
    content = config_text(edit, models.bait)
    try:
        config = check_config(models.hf, content)
        check_hf(models.hf, len(content), None if config is None else folder_tensors(models.hf))
    finally:
        (models.hf / "config.json").write_bytes(models.config)


@settings(FUZZ, max_examples=100)
@given(content=st.one_of(
    INDEX_DOC.map(lambda doc: json.dumps(doc).encode()),
    # the real index with one tensor moved to another file (maybe outside), or dropped, or added
    st.tuples(st.sampled_from(["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "new"]),
              st.sampled_from(["model-00001-of-00005.safetensors", "model-00005-of-00005.safetensors",
                               "../x.safetensors", "a/../../x.safetensors", BAIT, "config.json", DELETE])),
))
def test_sharded_folder_with_random_index(models, content):
    if isinstance(content, tuple):
        doc = json.loads(models.index)
        if content[1] == DELETE:
            doc["weight_map"].pop(content[0], None)
        else:
            doc["weight_map"][content[0]] = content[1]
        content = json.dumps(doc).encode()
    try:
        tensors = read_index(models.sharded, content)
        check_hf(models.sharded, len(content),
                 None if tensors is None else {n: (t.dtype, t.shape) for n, t in tensors.items()})
    finally:
        (models.sharded / "model.safetensors.index.json").write_bytes(models.index)


# The native metadata.yaml of the tiny Llama, by paths: where generated values go.
BASE = ("config", "base_model")
HF_CONFIG = ("metadata", "weightport", "hf_config")
META_PATHS = [
    ("config",), BASE, ("config", "type"), ("model",), ("format",), ("fast_llm_version",), ("shards",),
    BASE + ("hidden_size",), BASE + ("tied_embedding_weight",), BASE + ("peft",), BASE + ("decoder",),
    BASE + ("decoder", "num_blocks"), BASE + ("decoder", "type"), BASE + ("decoder", "block"),
    BASE + ("decoder", "blocks"), BASE + ("decoder", "pattern"), BASE + ("decoder", "block", "mixer"),
    BASE + ("decoder", "block", "mixer", "type"), BASE + ("decoder", "block", "mixer", "heads"),
    BASE + ("decoder", "block", "mixer", "head_groups"), BASE + ("decoder", "block", "mixer", "head_size"),
    BASE + ("decoder", "block", "mixer", "rotary"), BASE + ("decoder", "block", "mixer", "mixers"),
    BASE + ("decoder", "block", "mlp", "intermediate_size"), BASE + ("decoder", "block", "mlp", "type"),
    BASE + ("embeddings", "vocab_size"), BASE + ("head", "prediction_heads"), BASE + ("head", "normalization"),
    ("metadata",), ("metadata", "state_index"), ("metadata", "state_index", "head.output_weights/weights"),
    ("metadata", "state_index", "decoder.0.mlp.layer_1.weight/weights"), ("metadata", "state_index", "x/weights"),
    ("metadata", "state_index", "x/exp_avg"), ("metadata", "weightport"), ("metadata", "weightport", "format"),
    ("metadata", "weightport", "hf_layout"), HF_CONFIG, ("metadata", "weightport", "carried_tensors"),
    HF_CONFIG + ("num_hidden_layers",), HF_CONFIG + ("hidden_size",), HF_CONFIG + ("model_type",),
    HF_CONFIG + ("auto_map",), HF_CONFIG + ("rope_parameters",), HF_CONFIG + ("tie_word_embeddings",),
    HF_CONFIG + ("dtype",), HF_CONFIG + ("x",),
]
COUNT_PATHS = [BASE + ("decoder", "num_blocks"), BASE + ("hidden_size",), BASE + ("embeddings", "vocab_size"),
               BASE + ("decoder", "block", "mixer", "heads"), BASE + ("decoder", "block", "mixer", "head_groups"),
               BASE + ("decoder", "block", "mixer", "head_size"), BASE + ("head", "prediction_heads"),
               BASE + ("decoder", "block", "mlp", "intermediate_size"), HF_CONFIG + ("num_hidden_layers",),
               HF_CONFIG + ("hidden_size",), HF_CONFIG + ("vocab_size",)]
# metadata.weightport's fields given a wrong type, or naming what is not there
WEIGHTPORT_FIELDS = {
    "format": [123, [], {}, "", None, True, "nope", "llama", "mistral", "gemma4_vlm", "mistral3", Bomb()],
    "hf_layout": [1, [], {}, None, "", "nope", "transformers4", "transformers5.15"],
    "hf_config": [[], "llama", 1, None, {}, {"model_type": "llama"}, Bomb(), Cycle((("model_type", "llama"),))],
    "carried_tensors": [[], "carried.safetensors", 1, {}, [1], [None], [[]], [""], ["."], [".."],
                        ["../../x.safetensors"], ["a/../../../x.safetensors"], [BAIT], ["../model_0.safetensors"],
                        ["tokenizer.json"], ["missing.safetensors"], ["../../x.safetensors", "../../x.safetensors"]],
}


@st.composite
def metadata_edit(draw) -> tuple:
    """An edit of the native metadata.yaml: (path, value), value DELETE to remove the key; values include alias
    bombs and cycles (Bomb, Cycle), counts no model has, and wrong types in metadata.weightport's fields."""
    kind = draw(st.sampled_from(["value", "value", "count", "weightport", "shared"]))
    if kind == "count":
        return (draw(st.sampled_from(COUNT_PATHS)), draw(st.sampled_from(SPECIAL_NUMBERS)))
    if kind == "weightport":
        field = draw(st.sampled_from(sorted(WEIGHTPORT_FIELDS)))
        return (("metadata", "weightport", field), draw(st.sampled_from(WEIGHTPORT_FIELDS[field])))
    if kind == "shared":
        return (draw(st.sampled_from(META_PATHS)), draw(SHARED))
    return (draw(st.sampled_from(META_PATHS)), draw(st.one_of(VALUE, st.just(DELETE))))


def metadata_text(models: Models, edit: tuple) -> str:
    doc = put(yaml.safe_load(models.metadata), edit[0], edit[1])
    return render_yaml(doc, models.bait)


WEIGHTPORT = ("metadata", "weightport")
# Failures through a native folder found by the test below (minimized, fixed): edits of its metadata.yaml.
NATIVE_FAILURES = {
    "N1-carried-tensors-outside": (WEIGHTPORT + ("carried_tensors",), ["../../x.safetensors"]),
    "N1-carried-tensors-absolute": (WEIGHTPORT + ("carried_tensors",), [BAIT]),
    "N2-carried-tensors-not-strings": (WEIGHTPORT + ("carried_tensors",), [1]),
    "N3-hf-config-not-a-mapping": (HF_CONFIG, []),
    "N4-hf-config-empty": (HF_CONFIG, {}),
    "N5-hf-config-holds-itself": (HF_CONFIG, Cycle()),
    "N5-a-list-in-hf-config-holds-itself": (HF_CONFIG + ("x",), Cycle(mapping=False)),
    "N6-hf-config-an-alias-bomb": (HF_CONFIG, Bomb()),
    "N6-the-plan-config-an-alias-bomb": (HF_CONFIG + ("x",), Bomb(7, 6, mapping=False)),
    "N7-auto-map-not-a-mapping": (HF_CONFIG + ("auto_map",), [True]),
    "N8-hf-layout-unknown": (WEIGHTPORT + ("hf_layout",), "nope"),
    "N8-hf-layout-unhashable": (WEIGHTPORT + ("hf_layout",), []),
    "N9-format-unhashable": (WEIGHTPORT + ("format",), []),
    "N10-a-type-unhashable": (BASE + ("decoder", "type"), []),
    "N11-a-count-past-64-bits": (BASE + ("decoder", "num_blocks"), 2**63),
    "N12-no-blocks": (BASE + ("decoder", "num_blocks"), 0),
    "N13-a-billion-blocks": (BASE + ("decoder", "num_blocks"), 10**9),
    "N14-an-alias-bomb-in-a-field-message": (BASE + ("hidden_size",), Bomb(mapping=False)),
    "N14-an-alias-bomb-in-a-mapping-message": (BASE + ("decoder", "block"), Bomb(mapping=False)),
    "N14-an-alias-bomb-as-model": (("model",), Bomb()),
}


@settings(FUZZ, max_examples=100)
@pinned("edit", *NATIVE_FAILURES.values())
@given(edit=metadata_edit())
def test_native_folder_with_random_metadata(models, edit):
    check_native(models, edit)


@pytest.mark.parametrize("edit", NATIVE_FAILURES.values(), ids=NATIVE_FAILURES.keys())
def test_known_native_failure(models, edit):
    check_native(models, edit)


def check_native(models: Models, edit: tuple) -> None:
    folder = models.native
    text = metadata_text(models, edit)
    try:
        meta = read_yaml(folder, text)
        checkpoint, plan, info = run_api(folder, len(text.encode("utf-8", "surrogatepass")))
    finally:
        (folder / "metadata.yaml").write_text(models.metadata)
    if meta is None:
        assert checkpoint is None and plan is None and info is None, "accepted what read_metadata refuses"
        return
    weights, consistent = native_weights(folder, meta["metadata"]["state_index"])
    if checkpoint is not None:
        assert consistent, "accepted a state_index that names tensors its files lack, or files outside the folder"
        assert checkpoint.side == "native"
        assert same(checkpoint.explicit, meta["config"]["base_model"])
        assert {n: (t.dtype, t.shape) for n, t in checkpoint.tensors.items()} == weights
        assert checkpoint.hf_config is None or isinstance(checkpoint.hf_config, dict), checkpoint.hf_config
        assert checkpoint.hf_layout in layouts.NAMES, checkpoint.hf_layout
        for t in {**checkpoint.tensors, **(checkpoint.carried_tensors or {})}.values():
            assert _inside(os.path.abspath(t.file), folder), t.file
    if plan is not None:
        assert checkpoint is not None, "planned what open_checkpoint refuses"
        carried = {n: (t.dtype, t.shape) for n, t in (checkpoint.carried_tensors or {}).items()}
        check_plan(plan, {**weights, **carried})
        assert tree_size(plan.config) < 100_000, "the config.json of the plan is a cycle or a bomb written out"
    if info is not None:
        assert weights is not None, "inspected a state_index that names files outside the folder or missing"
        assert info["side"] == "native" and info["tensors"] == len(weights)


def native_weights(folder: Path, index: dict) -> tuple[dict | None, bool]:
    """({name: (dtype, shape)} of the `weights` tensors in the files a state_index names, as the reference reader
    reads them, or None if a file is missing, outside the folder or unreadable; whether every tensor the index names
    is in the file it names)."""
    tensors: dict[str, dict] = {}
    for file in dict.fromkeys(index.values()):
        path = folder / file
        if not _inside(os.path.normpath(os.path.abspath(path)), folder) or not path.is_file():
            return None, False
        try:
            with safe_open(path, "np") as f:
                tensors[file] = {n: (f.get_slice(n).get_dtype(), tuple(f.get_slice(n).get_shape())) for n in f.keys()}
        except Exception:  # noqa: BLE001 - the reference refuses the file
            return None, False
    weights = {n.removesuffix("/weights"): v for found in tensors.values() for n, v in found.items()
               if n.endswith("/weights")}
    return weights, all(key in tensors[file] for key, file in index.items())
