"""Property tests of the readers of untrusted files: safetensors headers, sharded checkpoints and metadata.yaml.

Whatever the bytes, a reader either returns a result that is safe to use (every tensor's byte range lies inside its
file and is exactly dtype size * number of elements; shards are inside the checkpoint folder) or raises
`WeightportError`, which the command prints as a clean message. Any other exception is a crash with a traceback.

metadata.yaml has rules simple enough to state in the test (`expected_metadata`): read_metadata must refuse exactly
what they refuse, and return the parsed document otherwise.

The runs are derandomized (the same examples every time); the crashes hypothesis found (and that are fixed)
stay pinned as `@example`s. `python -m pytest tests/test_fuzz_readers.py
--hypothesis-show-statistics` shows how many examples ran and, as events, how many were accepted or refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save, save_file

from weightport.errors import WeightportError
from weightport.io.safetensors import read_checkpoint, read_header
from weightport.native.checkpoint import read_metadata

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# Bytes per element of every safetensors dtype (from the format's specification, not from weightport).
ELEMENT_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F8_E4M3FNUZ": 1,
                 "F8_E5M2FNUZ": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
                 "I64": 8, "U64": 8, "F64": 8, "C64": 8}


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


def outcome(read, *args):
    """Call a reader: its result, or None when it refused the input with a WeightportError."""
    try:
        result = read(*args)
    except WeightportError:
        event("refused (WeightportError)")
        return None
    event("accepted")
    return result


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ---------------------------------------------------------------------------------------------------------------
# read_header


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


def read_file(folder: Path, content: bytes) -> None:
    """Write `content` as a .safetensors file and check what read_header makes of it."""
    path = folder / "fuzz.safetensors"
    path.write_bytes(content)
    result = outcome(read_header, path)
    if result is not None:
        infos, metadata = result
        check_infos(path, infos)
        assert isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())


def test_the_valid_file_is_accepted(folder):
    path = folder / "valid.safetensors"
    path.write_bytes(VALID)
    infos, _ = read_header(path)
    check_infos(path, infos)
    assert sorted(infos) == ["embed", "empty", "ids", "mask", "norm", "scalar"]


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
@given(content=json_header_file())
def test_random_json_header(folder, content):
    read_file(folder, content)


@FUZZ
@example(content=with_length(b'{"": {"dtype": [], "shape": [], "data_offsets": [0, 2]}}'))
@given(content=json_header_file(odd_dtypes=JSON))
def test_random_json_header_with_any_json_dtype(folder, content):
    read_file(folder, content)


@settings(FUZZ, max_examples=20)
@example(depth=5_000)
@given(depth=st.integers(1, 5_000))
def test_deeply_nested_header(folder, depth):
    read_file(folder, with_length(("[" * depth + "]" * depth).encode()))


# ---------------------------------------------------------------------------------------------------------------
# read_checkpoint: a folder of real shards, with an index file that is anything at all

SHARD_FILES = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
OTHER_FILES = ["broken.safetensors", "missing.safetensors", "sub", "../outside.safetensors", "/etc/passwd", "",
               ".", "./" + SHARD_FILES[0], SHARD_FILES[0] + "/", "sub/../" + SHARD_FILES[1], "model.safetensors"]
TENSORS = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """a, b in shard 1 and c in shard 2; plus a file that is not safetensors, a subfolder, and a valid
    safetensors file just outside the folder."""
    root = tmp_path_factory.mktemp("sharded")
    folder = root / "ckpt"
    folder.mkdir()
    save_file({"a": torch.zeros(2, 3), "b": torch.ones(4, dtype=torch.bfloat16)}, folder / SHARD_FILES[0])
    save_file({"c": torch.arange(3)}, folder / SHARD_FILES[1])
    save_file({"d": torch.zeros(2)}, root / "outside.safetensors")
    (folder / "broken.safetensors").write_bytes(b"\xff" * 12)
    (folder / "sub").mkdir()
    return folder


def read_index(folder: Path, content: bytes) -> None:
    (folder / "model.safetensors.index.json").write_bytes(content)
    tensors = outcome(read_checkpoint, folder)
    if tensors is None:
        return
    weight_map = json.loads(content.decode("utf-8"))["weight_map"]
    for name, info in tensors.items():
        file = Path(info.file).resolve()
        assert folder.resolve() in file.parents, f"{name} read from {file}, outside {folder}"
        assert (folder / weight_map[name]).resolve() == file, f"{name} read from {file}, not {weight_map[name]}"
        check_infos(Path(info.file), {k: v for k, v in tensors.items() if Path(v.file).resolve() == file})


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
# impossible), tags, anchors and aliases, block indicators, document markers.
VALUES = ["", "0.4.0", "0.2.9", "1", "fast_llm", "distributed", "null", "~", "[]", "{}", "[1]", "{a: b}", "gpt",
          "2001-02-03", "2001-02-30", "0x1F", "1e400", ".nan", "!!int x", "!!float x", "!!binary xx", "!!str",
          "!!python/name:os.getcwd", "&a x", "*a", "*b", "|", ">", "'", '"', "-", "? a", "%YAML 1.1", "---", "..."]
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
    """The valid metadata.yaml below with one mapping, at any depth, given a random key and value."""
    meta = yaml.safe_load(VALID_METADATA)
    node = meta
    for _ in range(draw(st.integers(0, 3))):
        children = [v for v in node.values() if isinstance(v, dict)]
        if not children:
            break
        node = draw(st.sampled_from(children))
    node[draw(st.one_of(st.sampled_from(sorted(node)), st.sampled_from(KEYS)))] = draw(TREE)
    return render(meta)


YAMLISH = st.one_of(TREE.map(render), valid_metadata_with_a_change(), st.text(max_size=60))


def _version(value: object) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(value).split(".")[:3])
    except ValueError:
        return ()


def expected_metadata(text: str) -> dict | None:
    """What read_metadata must make of `text`, by the rules of a native checkpoint's metadata.yaml: plain YAML (no
    tag is constructed, an impossible date or a nesting too deep is an error); a mapping whose `config` and
    `metadata` are mappings; `format` fast_llm or absent; a `fast_llm_version` whose first three dotted parts are
    integers, at least 0.3.0; `config.base_model` a mapping; `metadata.state_index` a non-empty mapping of names to
    file names (strings); `metadata.weightport`, if set, a mapping. Returns the parsed document, or None where the
    text must be refused."""
    try:
        doc = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError):
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
    return doc if isinstance(metadata.get("weightport") or {}, dict) else None


def read_yaml(folder: Path, text: str) -> None:
    """read_metadata refuses `text` with a WeightportError where the rules above refuse it, and otherwise returns
    the document the text holds: a bad input silently accepted, or a good one refused, fails."""
    (folder / "metadata.yaml").write_text(text, encoding="utf-8")
    meta = outcome(read_metadata, folder)
    expected = expected_metadata(text)
    if expected is None:
        assert meta is None, f"accepted, but should be refused: {text!r} -> {meta!r}"
    else:
        assert meta is not None, f"refused, but valid: {text!r}"
        assert repr(meta) == repr(expected), text  # repr: a .nan in the document equals itself


def test_the_valid_metadata_is_accepted_as_it_is(folder):
    (folder / "metadata.yaml").write_text(VALID_METADATA, encoding="utf-8")
    assert read_metadata(folder) == yaml.safe_load(VALID_METADATA) == expected_metadata(VALID_METADATA)


@FUZZ
@example(text=" 2001-02-30")
@given(text=YAMLISH)
def test_random_metadata(folder, text):
    read_yaml(folder, text)


@settings(FUZZ, max_examples=20)
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
])
def test_metadata_crashers(folder, text):
    """Each kind of crash of read_metadata (found by test_random_metadata, the AttributeErrors by reading the code)
    as its own case, so that each fix shows on its own: each is refused, with a WeightportError."""
    (folder / "metadata.yaml").write_text(text, encoding="utf-8")
    assert expected_metadata(text) is None
    with pytest.raises(WeightportError, match="metadata.yaml"):
        read_metadata(folder)
