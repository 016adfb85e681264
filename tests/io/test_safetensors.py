"""Tests of the lazy safetensors reader and the streaming sharded writer, on real files."""

from __future__ import annotations

import json
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from weightport.core import dtypes
from weightport.errors import CoverageError, FormatError, OutputError, WeightportError
from weightport.io.safetensors import (
    DTYPE_SIZES, Mappings, OutputTensor, ShardedWriter, TensorInfo, hf_shard_names, load, parse_size,
    read_block, read_checkpoint, read_files, read_header, read_range, read_raw, write_hf_index,
)

CODES = {getattr(torch, name): code for code, name in dtypes.TORCH.items()}  # torch dtype -> safetensors code


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
    return [OutputTensor(n, CODES[t.dtype], tuple(t.shape)) for n, t in tensors.items()]


def as_bytes(t: torch.Tensor) -> np.ndarray:
    """A torch tensor's bytes as a flat uint8 numpy array: what the writer takes for dtypes numpy lacks (bf16, f8)."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy()


def bits(t: torch.Tensor) -> bytes:
    return as_bytes(t).tobytes()


def writer(folder: Path, tensors: list[OutputTensor], **kw) -> ShardedWriter:
    kw.setdefault("max_shard_bytes", None)
    return ShardedWriter(folder, tensors, shard_names=hf_shard_names, **kw)


def write_all(folder: Path, tensors: dict[str, torch.Tensor], **kw) -> ShardedWriter:
    with writer(folder, plan(tensors), **kw) as w:
        for name in reversed(list(tensors)):
            w.write(name, as_bytes(tensors[name]))
    write_hf_index(folder, w)
    return w


def source_file(path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, TensorInfo]:
    save_file(tensors, path)
    return read_files([path])


def test_dtype_sizes() -> None:
    assert DTYPE_SIZES["BF16"] == 2 and DTYPE_SIZES["F8_E5M2"] == 1 and DTYPE_SIZES["I64"] == 8
    assert DTYPE_SIZES == dtypes.SIZES


def test_round_trip_bit_exact(tmp_path: Path) -> None:
    tensors = sample()
    write_all(tmp_path, tensors, metadata={"format": "pt"})
    infos, meta = read_header(tmp_path / "model.safetensors")
    assert meta == {"format": "pt"}
    assert set(infos) == set(tensors)
    for name, t in tensors.items():
        raw = read_raw(infos[name])
        assert raw.dtype == dtypes.raw(infos[name].dtype) and raw.shape == t.shape and raw.tobytes() == bits(t), name
        got = load(infos[name])
        assert got.dtype == t.dtype and bits(got) == bits(t), name
        assert got.shape == t.shape or name == "scalar", name  # see test_load_keeps_the_shape_of_a_scalar
    ref = load_file(tmp_path / "model.safetensors")
    for name, t in tensors.items():
        assert ref[name].dtype == t.dtype and bits(ref[name]) == bits(t), name
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert bits(f.get_tensor("bf16")) == bits(tensors["bf16"])


def test_load_keeps_the_shape_of_a_scalar(tmp_path: Path) -> None:
    infos = source_file(tmp_path / "src.safetensors", {"s": torch.tensor(2.5, dtype=torch.float64)})
    assert read_raw(infos["s"]).shape == ()
    assert load(infos["s"]).shape == ()


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


def test_an_index_beside_a_single_file_is_refused_naming_both(tmp_path: Path) -> None:
    """transformers loads model.safetensors and ignores the index; reading the shards would convert another model
    than the one transformers runs (issue 23, input 3): which one is stale only the user knows."""
    index_checkpoint(tmp_path, {"a": "s1"}, {"s1": {"a": torch.ones(1)}, "model.safetensors": {"z": torch.ones(1)}})
    with pytest.raises(FormatError, match=r"holds both model.safetensors and the sharded weights of "
                                          r"model.safetensors.index.json.*remove the stale one"):
        read_checkpoint(tmp_path)


def test_single_shard_writes_no_index(tmp_path: Path) -> None:
    write_all(tmp_path, {"a": torch.ones(3)}, max_shard_bytes=10**9)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_copy_copies_source(tmp_path: Path) -> None:
    src = sample()
    infos = source_file(tmp_path / "src.safetensors", {k: v for k, v in src.items() if k != "f8"})
    out = tmp_path / "out"
    renamed = {f"new.{n}": i for n, i in infos.items()}
    with writer(out, [OutputTensor(n, i.dtype, i.shape) for n, i in renamed.items()]) as w:
        for n, i in renamed.items():
            w.copy(n, i)
    got = load_file(out / "model.safetensors")
    for n, i in renamed.items():
        assert bits(got[n]) == bits(load(i)) == bits(src[i.name])
    # The writer checks byte counts, not dtypes: 60 bytes of F32 [3, 5] do not fit 30 bytes of F16 [3, 5].
    with pytest.raises(CoverageError, match=r"'new.f32': bytes 0..60 fall outside its 30 bytes"):
        with writer(tmp_path / "o2", [OutputTensor("new.f32", "F16", (3, 5))]) as w:
            w.copy("new.f32", infos["f32"])


def test_copy_byte_ranges(tmp_path: Path) -> None:
    # out = [b[4:], a[2:4], a[:2], b[:4]] as rows of 3 F32 values (12 bytes), assembled from byte ranges.
    a = torch.arange(12.0).reshape(4, 3)
    b = torch.arange(100.0, 124.0).reshape(8, 3)
    infos = source_file(tmp_path / "src.safetensors", {"a": a, "b": b})
    row = 12
    with writer(tmp_path / "out", [OutputTensor("out", "F32", (12, 3))]) as w:
        w.copy("out", infos["b"], src_offset=4 * row, offset=0)  # size defaults to the rest of the source
        w.copy("out", infos["a"], src_offset=2 * row, offset=4 * row, size=2 * row)
        w.copy("out", infos["a"], offset=6 * row, size=2 * row)
        w.copy("out", infos["b"], offset=8 * row, size=4 * row)
        with pytest.raises(CoverageError, match=r"'a' has no bytes 36..60"):
            w.copy("out", infos["a"], src_offset=3 * row, size=2 * row)
    expected = torch.cat([b[4:], a[2:4], a[:2], b[:4]])
    assert torch.equal(load_file(tmp_path / "out" / "model.safetensors")["out"], expected)


def test_copy_rejects_a_source_offset_past_the_end(tmp_path: Path) -> None:
    infos = source_file(tmp_path / "src.safetensors", {"a": torch.ones(2)})
    with writer(tmp_path / "out", [OutputTensor("out", "F32", (2,))]) as w:
        with pytest.raises(CoverageError):
            w.copy("out", infos["a"], src_offset=12)  # size=None -> -4 bytes
        w.copy("out", infos["a"])  # the refused copy recorded nothing: the whole tensor can still be written


def test_read_range(tmp_path: Path) -> None:
    t = torch.randn(6, 5, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    infos = source_file(tmp_path / "src.safetensors", {"before": torch.ones(3), "t": t, "after": torch.ones(2)})
    raw = bits(t)
    for offset, size in [(0, len(raw)), (10, 7), (len(raw) - 3, 3), (4, 0)]:
        got = read_range(infos["t"], offset, size)
        assert got.dtype == np.uint8 and got.shape == (size,)
        assert got.tobytes() == raw[offset : offset + size]
    got[...] = 0  # a new, writable array: the file is untouched
    assert read_range(infos["t"], 0, len(raw)).tobytes() == raw


def test_mapped_views(tmp_path: Path) -> None:
    tensors = {k: v for k, v in sample().items() if k != "f8"}
    infos = source_file(tmp_path / "src.safetensors", tensors)
    maps = Mappings()
    try:
        for name, info in infos.items():
            view = maps.view(info)
            assert view.dtype == dtypes.raw(info.dtype) and view.shape == info.shape, name
            assert view.tobytes() == bits(tensors[name]), name
            assert not view.flags.writeable or view.size == 0, name
            maps.release(info)  # drops the pages, not the data
            assert view.tobytes() == maps.view(info).tobytes() == bits(tensors[name]), name
    finally:
        maps.close()


def test_read_range_rejects_bytes_outside_the_tensor(tmp_path: Path) -> None:
    infos = source_file(tmp_path / "src.safetensors", {"a": torch.ones(2), "b": torch.zeros(2)})
    with pytest.raises(WeightportError):
        read_range(infos["a"], 4, 8)


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
        with writer(tmp_path / "a", tensors) as w:
            w.write("nope", np.ones((2, 3), np.float32))
    with writer(tmp_path / "b", tensors) as w:
        with pytest.raises(CoverageError, match=r"'v': bytes 0..16 fall outside its 8 bytes"):
            w.write("v", np.ones(4, np.float32))  # F32 [4] is twice the bytes of BF16 [4]
        w.write("w", np.ones((2, 3), np.float32))
        with pytest.raises(CoverageError, match="'w': bytes 0..24 are written twice"):
            w.write("w", np.ones((2, 3), np.float32))
        with pytest.raises(CoverageError, match="never .completely. written") as e:
            w.close()
        assert "v" in str(e.value) and "  w" not in str(e.value)
    w.close()  # idempotent
    with pytest.raises(OutputError, match="already closed"):
        w.write("v", np.zeros(4, np.uint16))


def test_partial_writes_fill_a_tensor_in_any_order(tmp_path: Path) -> None:
    t = torch.randn(8, 6, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    raw = dtypes.raw("BF16")
    data = t.view(torch.uint8).numpy()  # (8, 12) bytes
    with writer(tmp_path, [OutputTensor("t", "BF16", (8, 6)), OutputTensor("empty", "F32", (0, 3))]) as w:
        w.write("t", data[5:], offset=5 * 12)  # rows 5..7 as bytes
        w.write("t", data[:2].view(raw), offset=0)  # rows 0..1 as raw bf16 bits
        w.write("t", data[2:5].reshape(-1)[7:], offset=2 * 12 + 7)  # an unaligned tail
        w.write("t", data[2, :7], offset=2 * 12)  # and its head
    # An empty tensor has no bytes to write and counts as complete.
    got = load_file(tmp_path / "model.safetensors")
    assert bits(got["t"]) == bits(t) and got["empty"].shape == (0, 3)


def test_partial_writes_from_several_threads(tmp_path: Path) -> None:
    data = np.arange(64 * 100, dtype=np.uint32)
    with writer(tmp_path, [OutputTensor("t", "U32", (64, 100))]) as w, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: w.write("t", data[i * 100 : (i + 1) * 100], offset=i * 400), range(64)))
    assert np.array_equal(read_raw(read_files([tmp_path / "model.safetensors"])["t"]).reshape(-1), data)


def test_overlapping_writes_are_rejected(tmp_path: Path) -> None:
    infos = source_file(tmp_path / "src.safetensors", {"s": torch.arange(4.0)})
    with writer(tmp_path / "out", [OutputTensor("t", "F32", (4,))]) as w:
        w.write("t", np.float32([0.0, 1.0]), offset=0)
        for offset, size in [(0, 4), (4, 8), (7, 2), (0, 16)]:
            with pytest.raises(CoverageError, match="written twice"):
                w.write("t", np.zeros(size, np.uint8), offset=offset)
        with pytest.raises(CoverageError, match=r"'t': bytes 4..12 are written twice"):
            w.copy("t", infos["s"], src_offset=4, offset=4, size=8)
        w.copy("t", infos["s"], src_offset=8, offset=8)  # a rejected write leaves no trace: the rest still fits
    assert load_file(tmp_path / "out" / "model.safetensors")["t"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_writes_past_the_end_are_rejected(tmp_path: Path) -> None:
    infos = source_file(tmp_path / "src.safetensors", {"s": torch.arange(4.0)})
    with pytest.raises(CoverageError, match=r"never .completely. written"):
        with writer(tmp_path / "out", [OutputTensor("t", "F32", (4,))]) as w:
            with pytest.raises(CoverageError, match=r"'t': bytes 12..20 fall outside its 16 bytes"):
                w.write("t", np.zeros(2, np.float32), offset=12)
            with pytest.raises(CoverageError, match=r"'t': bytes -4..4 fall outside"):
                w.write("t", np.zeros(2, np.float32), offset=-4)
            with pytest.raises(CoverageError, match=r"'t': bytes 4..20 fall outside"):
                w.copy("t", infos["s"], offset=4)
            w.write("t", np.zeros(3, np.float32), offset=0)


def test_close_fails_for_a_partly_written_tensor(tmp_path: Path) -> None:
    tensors = [OutputTensor("done", "F32", (2,)), OutputTensor("half", "F16", (2, 4))]
    w = writer(tmp_path, tensors)
    w.write("done", np.ones(2, np.float32))
    w.write("half", np.ones(4, np.float16), offset=0)
    w.write("half", np.ones(2, np.float16), offset=12)  # bytes 8..12 are missing
    with pytest.raises(CoverageError, match="never .completely. written .1 problem") as e:
        w.close()
    assert "half" in str(e.value) and "done" not in str(e.value)
    w.close()  # the shards were released anyway
    w = writer(tmp_path / "holes", tensors)
    w.write("half", np.ones(2, np.float16), offset=12)
    w.close(complete=False)  # header-only files: unwritten bytes stay holes
    assert load_file(tmp_path / "holes" / "model.safetensors")["half"].tolist() == [[0.0] * 4, [0.0, 0.0, 1.0, 1.0]]


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


def test_read_block_reads_a_band_of_rows_and_columns(tmp_path: Path) -> None:
    matrix = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    infos = source_file(tmp_path / "m.safetensors", {"m": matrix})
    block = read_block(infos["m"], (1, 5), (2, 7))
    assert np.array_equal(block.view(np.float32), matrix[1:5, 2:7].numpy())
    assert np.array_equal(read_block(infos["m"], (2, 4), (0, 8)).view(np.float32), matrix[2:4].numpy())
    with pytest.raises(FormatError, match="has no block"):
        read_block(infos["m"], (0, 7), (0, 8))


def test_blocks_fill_a_matrix_in_any_order(tmp_path: Path) -> None:
    """Blocks of columns are written through a shared map; together they are the tensor, bit for bit."""
    data = np.arange(7 * 1500, dtype=np.uint16).reshape(7, 1500)
    tensors = [OutputTensor("first", "BF16", (3,)), OutputTensor("m", "BF16", (7, 1500))]
    with writer(tmp_path / "out", tensors) as w:
        w.write("first", np.zeros(3, np.uint16))  # the matrix starts mid-page
        for col in (1000, 0, 333):
            stop = {0: 333, 333: 1000, 1000: 1500}[col]
            w.write_block("m", data[:4, col:stop], (0, col))
        w.write_block("m", data[4:], (4, 0))
    got = load_file(tmp_path / "out" / "model.safetensors")["m"]
    assert np.array_equal(got.view(torch.int16).numpy().view(np.uint16), data)


def test_block_writes_are_checked(tmp_path: Path) -> None:
    tensors = [OutputTensor("m", "F32", (4, 6)), OutputTensor("v", "F32", (4,))]
    with writer(tmp_path / "out", tensors) as w:
        w.write_block("m", np.zeros((4, 3), np.float32), (0, 0))
        with pytest.raises(CoverageError, match=r"block \[2, 2\] at \[1, 2\] is written twice"):
            w.write_block("m", np.zeros((2, 2), np.float32), (1, 2))
        with pytest.raises(CoverageError, match="falls outside it"):
            w.write_block("m", np.zeros((2, 4), np.float32), (0, 3))
        with pytest.raises(CoverageError, match="cannot write a block of float16"):
            w.write_block("m", np.zeros((2, 2), np.float16), (0, 3))
        with pytest.raises(CoverageError, match="cannot write a block"):
            w.write_block("v", np.zeros((1, 4), np.float32), (0, 0))
        with pytest.raises(CoverageError, match="written both by blocks and by byte ranges"):
            w.write("m", np.zeros(3, np.float32), offset=12)
        w.write("v", np.zeros(4, np.float32))
        with pytest.raises(CoverageError, match="never .completely. written") as e:  # columns 3..6 are missing
            w.close()
        assert str(e.value).splitlines()[1] == "  m" and "\n  v" not in str(e.value)
    with writer(tmp_path / "out2", tensors) as w:
        w.write("m", np.zeros(3, np.float32))
        with pytest.raises(CoverageError, match="written both by byte ranges and by blocks"):
            w.write_block("m", np.zeros((1, 3), np.float32), (1, 0))
        w.write("m", np.zeros(21, np.float32), offset=12)
        w.write("v", np.zeros(4, np.float32))
