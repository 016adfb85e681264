"""Tests of the lazy safetensors reader and the streaming sharded writer, on real files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from weightport.errors import CoverageError, FormatError
from weightport.io.safetensors import (
    DTYPE_SIZES, TORCH_DTYPES, OutputTensor, ShardedWriter, TensorInfo, dtype_code, hf_shard_names, load,
    parse_size, read_checkpoint, read_files, read_header, write_hf_index,
)


def sample() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 5, generator=g),
        "bf16": torch.randn(4, 7, generator=g).to(torch.bfloat16),
        "f16": torch.randn(9, generator=g).to(torch.float16),
        "i64": torch.arange(-6, 6, dtype=torch.int64).reshape(2, 2, 3),
        "u8": torch.arange(0, 255, 17, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "f8": torch.randn(5, generator=g).to(torch.float8_e4m3fn),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4, dtype=torch.bfloat16),
    }


def plan(tensors: dict[str, torch.Tensor]) -> list[OutputTensor]:
    return [OutputTensor(n, dtype_code(t.dtype), tuple(t.shape)) for n, t in tensors.items()]


def bits(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def write_all(folder: Path, tensors: dict[str, torch.Tensor], **kw) -> ShardedWriter:
    kw.setdefault("max_shard_bytes", None)
    with ShardedWriter(folder, plan(tensors), shard_names=hf_shard_names, **kw) as w:
        for name in reversed(list(tensors)):
            w.write(name, tensors[name])
    write_hf_index(folder, w)
    return w


def test_dtype_tables_agree() -> None:
    assert DTYPE_SIZES["BF16"] == 2 and DTYPE_SIZES["F8_E5M2"] == 1 and DTYPE_SIZES["I64"] == 8
    for code, dt in TORCH_DTYPES.items():
        assert dtype_code(dt) == code


def test_round_trip_bit_exact(tmp_path: Path) -> None:
    tensors = sample()
    write_all(tmp_path, tensors, metadata={"format": "pt"})
    infos, meta = read_header(tmp_path / "model.safetensors")
    assert meta == {"format": "pt"}
    assert set(infos) == set(tensors)
    for name, t in tensors.items():
        got = load(infos[name])
        assert got.dtype == t.dtype and got.shape == t.shape and bits(got) == bits(t), name
    ref = load_file(tmp_path / "model.safetensors")
    for name, t in tensors.items():
        assert ref[name].dtype == t.dtype and bits(ref[name]) == bits(t), name
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert bits(f.get_tensor("bf16")) == bits(tensors["bf16"])


def test_reads_files_from_safetensors_library(tmp_path: Path) -> None:
    tensors = {k: v for k, v in sample().items() if k != "f8"}
    save_file(tensors, tmp_path / "model.safetensors", metadata={"a": "b"})
    infos = read_checkpoint(tmp_path)
    assert {n: bits(load(i)) for n, i in infos.items()} == {n: bits(t) for n, t in tensors.items()}


def test_sharding_and_index(tmp_path: Path) -> None:
    tensors = {f"layer.{i}": torch.full((10,), float(i)) for i in range(5)}  # 40 bytes each
    tensors["big"] = torch.arange(30, dtype=torch.float32)  # 120 bytes, over the limit
    tensors["tail"] = torch.ones(2)
    w = write_all(tmp_path, tensors, max_shard_bytes=100)
    assert w.shards == hf_shard_names(5) == [f"model-0000{i}-of-00005.safetensors" for i in range(1, 6)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(w.shards + ["model.safetensors.index.json"])
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == w.total_bytes == 5 * 40 + 120 + 8
    assert index["weight_map"] == w.weight_map and list(index["weight_map"]) == sorted(w.weight_map)
    assert [n for n, f in w.weight_map.items() if f == w.weight_map["big"]] == ["big"]
    assert w.weight_map["layer.0"] == w.weight_map["layer.1"] != w.weight_map["layer.2"]
    infos = read_checkpoint(tmp_path)
    assert {n: bits(load(i)) for n, i in infos.items()} == {n: bits(t) for n, t in tensors.items()}
    for shard in w.shards:
        load_file(tmp_path / shard)


def test_index_preferred_over_single_file(tmp_path: Path) -> None:
    index_checkpoint(tmp_path, {"a": "s1"}, {"s1": {"a": torch.ones(1)}, "model.safetensors": {"z": torch.ones(1)}})
    assert list(read_checkpoint(tmp_path)) == ["a"]


def test_single_shard_writes_no_index(tmp_path: Path) -> None:
    write_all(tmp_path, {"a": torch.ones(3)}, max_shard_bytes=10**9)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_write_bytes_copies_source(tmp_path: Path) -> None:
    src = sample()
    save_file({k: v for k, v in src.items() if k != "f8"}, tmp_path / "src.safetensors")
    infos = read_files([tmp_path / "src.safetensors"])
    out = tmp_path / "out"
    renamed = {f"new.{n}": i for n, i in infos.items()}
    with ShardedWriter(out, [OutputTensor(n, i.dtype, i.shape) for n, i in renamed.items()],
                       max_shard_bytes=None, shard_names=hf_shard_names) as w:
        for n, i in renamed.items():
            w.write_bytes(n, i)
    got = load_file(out / "model.safetensors")
    for n, i in renamed.items():
        assert bits(got[n]) == bits(load(i)) == bits(src[i.name])
    with pytest.raises(CoverageError, match="new.f32"):
        with ShardedWriter(tmp_path / "o2", [OutputTensor("new.f32", "F16", (3, 5))],
                           max_shard_bytes=None, shard_names=hf_shard_names) as w:
            w.write_bytes("new.f32", infos["f32"])


def write_raw(path: Path, header: dict | bytes, data: bytes = b"", length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


@pytest.mark.parametrize("header,data,length,match", [
    (b"", b"", None, "not valid UTF-8 JSON"),
    (b"{not json", b"", None, "not valid UTF-8 JSON"),
    (b"\xff\xfe{}", b"", None, "not valid UTF-8 JSON"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"1234", None, "'w'.*out of range"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), None, "'w'.*needs 12"),
    ({"w": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, bytes(1), None, "'w'.*unknown dtype"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8), None, "'a' and 'b' overlap"),
    ({}, b"", 10**12, "header length"),
])
def test_corrupt_headers(tmp_path: Path, header, data, length, match) -> None:
    path = write_raw(tmp_path / "bad.safetensors", header, data, length)
    with pytest.raises(FormatError, match=match) as e:
        read_header(path)
    assert "bad.safetensors" in str(e.value)


def test_truncated_file(tmp_path: Path) -> None:
    (tmp_path / "short.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(FormatError, match="short.safetensors.*too short"):
        read_header(tmp_path / "short.safetensors")
    save_file({"w": torch.ones(100)}, tmp_path / "cut.safetensors")
    raw = (tmp_path / "cut.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[:-10])
    with pytest.raises(FormatError, match="cut.safetensors.*'w'"):
        read_header(tmp_path / "cut.safetensors")


def index_checkpoint(folder: Path, weight_map: dict[str, str], files: dict[str, dict[str, torch.Tensor]]) -> None:
    for name, tensors in files.items():
        save_file(tensors, folder / name)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="pytorch_model.bin.*pickle"):
        read_checkpoint(tmp_path)
    one, two = {"a": torch.ones(1)}, {"b": torch.ones(1)}
    cases = {
        "missing": ({"a": "s1", "b": "gone.safetensors"}, "gone.safetensors.*missing"),
        "not_in_shard": ({"a": "s1", "b": "s2", "c": "s2"}, "'c' is listed under s2"),
        "not_in_map": ({"a": "s1"}, "'b' is in s2.*not in weight_map"),
        "duplicate": ({"a": "s1", "b": "s2"}, "'a' is in both s1 and s2"),
    }
    for case, (weight_map, match) in cases.items():
        folder = tmp_path / case
        folder.mkdir()
        files = {"s1": one, "s2": {**two, **one} if case == "duplicate" else two}
        if case == "not_in_map":
            weight_map = {**weight_map, "x": "s2"}
            files["s2"] = {"b": torch.ones(1), "x": torch.ones(1)}
        index_checkpoint(folder, weight_map, files)
        with pytest.raises(FormatError, match=match):
            read_checkpoint(folder)


def test_read_files_duplicate(tmp_path: Path) -> None:
    save_file({"a": torch.ones(1)}, tmp_path / "x.safetensors")
    save_file({"a": torch.ones(1)}, tmp_path / "y.safetensors")
    with pytest.raises(FormatError, match="'a' is in both x.safetensors and y.safetensors"):
        read_files([tmp_path / "x.safetensors", tmp_path / "y.safetensors"])


def test_writer_rejects_bad_writes(tmp_path: Path) -> None:
    tensors = [OutputTensor("w", "F32", (2, 3)), OutputTensor("v", "BF16", (4,))]
    with pytest.raises(CoverageError, match="'nope' is not in the output plan"):
        with ShardedWriter(tmp_path / "a", tensors, max_shard_bytes=None, shard_names=hf_shard_names) as w:
            w.write("nope", torch.ones(2, 3))
    with ShardedWriter(tmp_path / "b", tensors, max_shard_bytes=None, shard_names=hf_shard_names) as w:
        with pytest.raises(CoverageError, match=r"'w': expected F32 \[2, 3\], got F32 \[3, 2\]"):
            w.write("w", torch.ones(3, 2))
        with pytest.raises(CoverageError, match=r"'v': expected BF16 \[4\], got F32 \[4\]"):
            w.write("v", torch.ones(4))
        w.write("w", torch.ones(2, 3))
        with pytest.raises(CoverageError, match="'w' was already written"):
            w.write("w", torch.ones(2, 3))
        with pytest.raises(CoverageError, match="never written") as e:
            w.close()
        assert "v" in str(e.value) and "  w" not in str(e.value)
    w.close()  # idempotent


def test_parse_size() -> None:
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("40kb") == 40_000
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("1.5GB") == 1_500_000_000
    assert parse_size("123") == 123
    for bad in ["", "5XB", "GB", "-1", "0", "5 G B"]:
        with pytest.raises(ValueError, match="invalid size"):
            parse_size(bad)


def test_tensor_info_nbytes() -> None:
    assert TensorInfo("x", "F32", (2,), Path("f"), 16, 24).nbytes == 8
