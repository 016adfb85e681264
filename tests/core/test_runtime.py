"""Tests of the runtime on in-memory tensors: which steps only move bytes and which compute, chunked casts,
workers and errors. `Memory` is this file's own stand-in for the Source and Sink protocols; it records every
call and checks that each output byte is written exactly once. Expected values come from torch."""

from __future__ import annotations

import math
import threading
from collections import Counter

import numpy as np
import pytest
import torch

from weightport.core import dtypes, runtime
from weightport.core.ops import Flatten, T
from weightport.core.plan import Plan, Ref, build
from weightport.core.runtime import moves, run
from weightport.core.weights import Fuse, Tensor, walk

# Rules whose steps only lay bytes end to end: a rename, concats along dim 0 (equal and unequal parts) and a
# reshape of stacked experts. Then rules that need compute: a transpose, a concat along dim 1, transposed parts
# stacked along dim 0, and transposed stacked experts.
BYTE_RULES = (
    Tensor("embed.weight", "model.embed.weight"),
    Fuse("kv.weight", "k.weight", "v.weight"),
    Fuse("query.weight", "q_a.weight", "q_b.weight", sizes=(4, 2)),
    Tensor("experts.weight", "experts.weight", ops=(Flatten(0, (2, -1)),)),
)
COMPUTE_RULES = (
    Tensor("down.weight", "down_proj.weight", ops=(T(),)),
    Fuse("gate_up.weight", "gate.weight", "up.weight", dim=1),
    Fuse("out.weight", "out_a.weight", "out_b.weight", sizes=(2, 3), ops=(T(),)),  # transposed parts, stacked
    Tensor("experts_down.weight", "experts_down.weight", ops=(T(), Flatten(0, (2, -1)))),  # transposed experts
)
ALL_RULES = BYTE_RULES + COMPUTE_RULES
NATIVE = {"embed.weight": (10, 4), "kv.weight": (4, 4), "query.weight": (6, 4), "experts.weight": (6, 4),
          "down.weight": (8, 4), "gate_up.weight": (4, 6), "out.weight": (5, 4),
          "experts_down.weight": (6, 4)}
HF = {"model.embed.weight": (10, 4), "k.weight": (2, 4), "v.weight": (2, 4), "q_a.weight": (4, 4),
      "q_b.weight": (2, 4), "experts.weight": (2, 3, 4), "down_proj.weight": (4, 8), "gate.weight": (4, 3),
      "up.weight": (4, 3), "out_a.weight": (4, 2), "out_b.weight": (4, 3),
      "experts_down.weight": (2, 4, 3)}
TORCH = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
SIGNED = {2: torch.int16, 4: torch.int32}


def plan(direction: str, rules: tuple, code: str = "F32", dtype: str | None = None) -> Plan:
    bindings = walk(rules, {})
    inventory = {b.native: NATIVE[b.native] for b in bindings}
    if direction == "from_hf":
        sources = {h: Ref(h, HF[h], code) for b in bindings for h in b.hf}
    else:
        sources = {n: Ref(n, shape, code) for n, shape in inventory.items()}
    return build("toy", direction, bindings, inventory, sources, dtype, {})


def hf_tensors(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {name: torch.randn(shape, generator=g).to(dtype) for name, shape in HF.items()}


def native_tensors(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What each native tensor is, computed with torch."""
    return {
        "embed.weight": hf["model.embed.weight"],
        "kv.weight": torch.cat([hf["k.weight"], hf["v.weight"]]),
        "query.weight": torch.cat([hf["q_a.weight"], hf["q_b.weight"]]),
        "experts.weight": hf["experts.weight"].reshape(6, 4),
        "down.weight": hf["down_proj.weight"].T,
        "gate_up.weight": torch.cat([hf["gate.weight"], hf["up.weight"]], 1),
        "out.weight": torch.cat([hf["out_a.weight"].T, hf["out_b.weight"].T]),
        "experts_down.weight": hf["experts_down.weight"].transpose(1, 2).reshape(6, 4),
    }


def raw(t: torch.Tensor) -> np.ndarray:
    """A torch tensor's bits as a raw numpy array (unsigned ints of its width, like `dtypes.raw`)."""
    return t.contiguous().view(SIGNED[t.element_size()]).numpy().view(f"<u{t.element_size()}")


def raws(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: raw(t) for name, t in tensors.items()}


def assert_bits_equal(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for name, array in expected.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape, name
        assert np.array_equal(got[name], array), name


class Boom(Exception):
    pass


class Memory:
    """A Source over raw arrays and a Sink into byte buffers. Records `(method, tensor name)` of every call (the
    source tensor for views, reads and releases, the output tensor for writes and moves); raises Boom on the call
    named by `fail`."""

    def __init__(self, tensors: dict[str, np.ndarray], outputs: list[Ref], fail: tuple[str, str] | None = None):
        self.tensors, self.fail = tensors, fail
        self.outputs = {r.name: r for r in outputs}
        self.out = {r.name: np.zeros(runtime.nbytes(r), np.uint8) for r in outputs}
        self.written = {r.name: np.zeros(runtime.nbytes(r), bool) for r in outputs}
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def view(self, ref: Ref) -> np.ndarray:
        self._call("view", ref.name)
        view = self.tensors[ref.name].view()
        view.flags.writeable = False  # like a read-only memory map
        return view

    def release(self, ref: Ref) -> None:
        self._call("release", ref.name)

    def read_range(self, ref: Ref, offset: int, size: int) -> np.ndarray:
        self._call("read_range", ref.name)
        return self._bytes(ref.name, offset, size).copy()

    def write(self, ref: Ref, array: np.ndarray, offset: int = 0) -> None:
        self._call("write", ref.name)
        assert array.flags.c_contiguous and array.dtype == dtypes.raw(ref.dtype), (ref, array.dtype)
        self._put(ref.name, offset, array.reshape(-1).view(np.uint8))

    def write_block(self, ref: Ref, array: np.ndarray, at: tuple[int, int]) -> None:
        self._call("write_block", ref.name)
        assert array.ndim == 2 and array.dtype == dtypes.raw(ref.dtype), (ref, array.dtype)
        row_bytes, width = ref.shape[1] * array.itemsize, array.itemsize
        for i, line in enumerate(array):
            self._put(ref.name, (at[0] + i) * row_bytes + at[1] * width, np.ascontiguousarray(line).view(np.uint8))

    def move(self, src: Ref, src_offset: int, dst: Ref, dst_offset: int, size: int) -> None:
        self._call("move", dst.name)
        assert src.dtype == dst.dtype
        self._put(dst.name, dst_offset, self._bytes(src.name, src_offset, size))

    def _call(self, method: str, name: str) -> None:
        with self.lock:
            self.calls.append((method, name))
        if self.fail == (method, name):
            raise Boom(f"{method} {name}")

    def _bytes(self, name: str, offset: int, size: int) -> np.ndarray:
        data = self.tensors[name].reshape(-1).view(np.uint8)
        assert 0 <= offset and offset + size <= len(data), f"{name}: read past the end"
        return data[offset : offset + size]

    def _put(self, name: str, offset: int, data: np.ndarray) -> None:
        with self.lock:
            assert offset + len(data) <= len(self.out[name]), f"{name}: write past the end"
            assert not self.written[name][offset : offset + len(data)].any(), f"{name}: bytes written twice"
            self.out[name][offset : offset + len(data)] = data
            self.written[name][offset : offset + len(data)] = True

    def result(self) -> dict[str, np.ndarray]:
        """Every output tensor as a raw array; each must be completely written."""
        assert all(w.all() for w in self.written.values()), "some output bytes were never written"
        return {n: self.out[n].view(dtypes.raw(r.dtype)).reshape(r.shape) for n, r in self.outputs.items()}

    def methods(self) -> Counter:
        return Counter(method for method, _ in self.calls)


def memory(the_plan: Plan, tensors: dict[str, np.ndarray], cls: type[Memory] = Memory, **kw) -> Memory:
    """A Memory holding `tensors`, with room for every output of the plan."""
    return cls(tensors, [ref for step in the_plan.steps for ref in step.dst], **kw)


def execute(the_plan: Plan, tensors: dict[str, np.ndarray], cls: type[Memory] = Memory, **kw) -> Memory:
    sink = memory(the_plan, tensors, cls)
    run(the_plan, sink, sink, **kw)
    return sink


# Which steps move bytes and which compute


def test_renames_concats_and_splits_only_move_bytes() -> None:
    hf = hf_tensors()
    forward = plan("from_hf", BYTE_RULES)
    assert {step.op for step in forward.steps} == {"rename", "concat(dim=0)", "flatten(0,2x-1)"}
    native = execute(forward, raws(hf))
    assert native.methods() == {"move": 6}  # one per HF tensor: no view, no read, no write
    assert_bits_equal(native.result(), raws({n: native_tensors(hf)[n] for n in NATIVE if n in native.out}))

    backward = plan("to_hf", BYTE_RULES)
    assert "split(dim=0)" in {step.op for step in backward.steps}
    back = execute(backward, native.result())
    assert back.methods() == {"move": 6}
    assert_bits_equal(back.result(), raws({n: hf[n] for n in back.out}))


@pytest.mark.parametrize("dtype", [None, "BF16"])
def test_transposes_and_other_concats_view_and_write(dtype: str | None) -> None:
    hf = hf_tensors()
    native = execute(plan("from_hf", COMPUTE_RULES, dtype=dtype), raws(hf))
    inputs = ["down_proj.weight", "experts_down.weight", "gate.weight", "out_a.weight", "out_b.weight", "up.weight"]
    assert sorted(name for method, name in native.calls if method == "view") == inputs
    assert sorted(name for method, name in native.calls if method == "release") == inputs
    writes = Counter(name for method, name in native.calls if method == "write")
    assert writes == {"down.weight": 1, "gate_up.weight": 1, "out.weight": 2,  # stacked parts: one write each
                      "experts_down.weight": 1}
    to = TORCH[dtype or "F32"]
    expected = native_tensors(hf)
    assert_bits_equal(native.result(), {n: raw(expected[n].to(to)) for n in native.out})

    back = execute(plan("to_hf", COMPUTE_RULES, code=dtype or "F32", dtype="F32"), native.result())
    assert back.methods() == {"view": 4, "write": 6, "release": 4}
    assert_bits_equal(back.result(), {n: raw(hf[n].to(to).float()) for n in back.out})


def test_transforms_write_slab_by_slab(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "SLAB", 40)  # output bytes: 2 rows of 4 F32 values, 1 row of 6
    monkeypatch.setattr(runtime, "TILE_ROWS", 1)  # tiles smaller than a slab and narrower than a row
    monkeypatch.setattr(runtime, "TILE_COLUMNS", 3)
    monkeypatch.setattr(runtime, "RELEASE", 50)  # release the inputs every other slab
    hf = hf_tensors()
    native = execute(plan("from_hf", COMPUTE_RULES), raws(hf))
    writes = Counter(name for method, name in native.calls if method == "write")
    assert writes == {"down.weight": 4, "gate_up.weight": 4, "out.weight": 1 + 2, "experts_down.weight": 3}
    assert native.methods()["release"] > native.methods()["view"]
    assert_bits_equal(native.result(), raws({n: native_tensors(hf)[n] for n in native.out}))
    back = execute(plan("to_hf", COMPUTE_RULES), native.result())
    assert_bits_equal(back.result(), raws({n: hf[n] for n in back.out}))


@pytest.mark.parametrize("src, dst", [("F32", "BF16"), ("BF16", "F32"), ("F32", "F16"), ("F16", "BF16")])
def test_casts_of_byte_level_steps_run_in_chunks_bit_exact(monkeypatch, src: str, dst: str) -> None:
    monkeypatch.setattr(runtime, "CHUNK", 12)  # bytes: 3 elements when one side is F32, else 6; never a divisor
    per_chunk = 12 // max(dtypes.SIZES[src], dtypes.SIZES[dst])
    hf = hf_tensors(TORCH[src])
    forward = plan("from_hf", BYTE_RULES, code=src, dtype=dst)
    native = execute(forward, raws(hf))
    chunks = sum(math.ceil(math.prod(ref.shape) / per_chunk) for step in forward.steps for ref in step.src)
    assert chunks > 2 * len(forward.steps)
    assert native.methods() == {"read_range": chunks, "write": chunks}
    expected = native_tensors(hf)
    assert_bits_equal(native.result(), {n: raw(expected[n].to(TORCH[dst])) for n in native.out})

    back = execute(plan("to_hf", BYTE_RULES, code=dst, dtype=src), native.result())  # splits, cast back
    assert set(back.methods()) == {"read_range", "write"}
    assert_bits_equal(back.result(), {n: raw(hf[n].to(TORCH[dst]).to(TORCH[src])) for n in back.out})


def test_moves_lists_element_ranges() -> None:
    steps = {step.dst[0].name: step for step in plan("from_hf", ALL_RULES).steps}
    kv = steps["kv.weight"]
    k, v = kv.src
    assert moves(kv, "from_hf") == [(k, kv.dst[0], 0, 0, 8), (v, kv.dst[0], 0, 8, 8)]
    assert moves(steps["down.weight"], "from_hf") is None
    assert moves(steps["gate_up.weight"], "from_hf") is None
    query = next(step for step in plan("to_hf", ALL_RULES).steps if step.src[0].name == "query.weight")
    q_a, q_b = query.dst
    assert moves(query, "to_hf") == [(query.src[0], q_a, 0, 0, 16), (query.src[0], q_b, 16, 0, 8)]


# Workers, progress and errors


def test_round_trip_with_progress() -> None:
    hf = raws(hf_tensors())
    forward, seen = plan("from_hf", ALL_RULES), []
    native = execute(forward, hf, workers=1, progress=seen.append)
    assert seen == list(forward.steps)
    back = execute(plan("to_hf", ALL_RULES), native.result(), workers=1)
    assert_bits_equal(back.result(), hf)


@pytest.mark.parametrize("dtype", [None, "BF16"])
@pytest.mark.parametrize("workers", [2, 4])
def test_workers_give_the_same_result_as_one(monkeypatch, dtype: str | None, workers: int) -> None:
    monkeypatch.setattr(runtime, "CHUNK", 8)
    hf = raws(hf_tensors())
    forward = plan("from_hf", ALL_RULES, dtype=dtype)
    one = execute(forward, hf, workers=1)
    seen: list = []
    many = execute(forward, hf, workers=workers, progress=seen.append)
    assert_bits_equal(many.result(), one.result())
    assert Counter(many.calls) == Counter(one.calls)
    assert Counter(seen) == Counter(forward.steps)


def test_two_workers_overlap_copies_and_transforms() -> None:
    """Byte moves run on one thread and transforms on another, at the same time."""
    barrier, met = threading.Barrier(2, timeout=10), []

    class Meeting(Memory):
        def move(self, *args) -> None:
            if "move" not in met:  # the first move and the first transform wait for each other
                met.append("move")
                barrier.wait()
            super().move(*args)

        def view(self, ref: Ref) -> np.ndarray:
            if "transform" not in met:
                met.append("transform")
                barrier.wait()
            return super().view(ref)

    execute(plan("from_hf", ALL_RULES), raws(hf_tensors()), Meeting, workers=2)
    assert "move" in met and "transform" in met


def test_transform_threads_take_copies_when_they_run_out() -> None:
    """A plan of copies only still keeps both threads busy: two moves run at the same time."""
    barrier, threads = threading.Barrier(2, timeout=10), set()

    class Meeting(Memory):
        def move(self, *args) -> None:
            if len(threads) < 2:
                threads.add(threading.current_thread().name)
                barrier.wait()
            super().move(*args)

    copies = plan("from_hf", BYTE_RULES)
    hf = raws(hf_tensors())
    assert_bits_equal(execute(copies, hf, Meeting, workers=2).result(), execute(copies, hf, workers=1).result())
    assert len(threads) == 2


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("fail", [("view", "down_proj.weight"), ("move", "kv.weight"), ("write", "gate_up.weight")])
def test_an_error_in_one_step_propagates(fail: tuple[str, str], workers: int) -> None:
    forward = plan("from_hf", ALL_RULES)
    sink = memory(forward, raws(hf_tensors()), fail=fail)
    with pytest.raises(Boom, match=" ".join(fail)):
        run(forward, sink, sink, workers=workers)


def test_an_error_stops_a_serial_run() -> None:
    forward = plan("from_hf", ALL_RULES)
    first = ("move", forward.steps[0].dst[0].name)
    sink = memory(forward, raws(hf_tensors()), fail=first)
    with pytest.raises(Boom):
        run(forward, sink, sink, workers=1)
    assert sink.calls == [first]


@pytest.mark.parametrize("shape", [(5, 7), (300, 70), (3, 257, 65), (1, 1), (0, 4)])
def test_contiguous_copies_any_strided_view_tile_by_tile(shape: tuple[int, ...]) -> None:
    """Transposed views whose sides are not multiples of a tile (and batches of them) copy exactly."""
    data = np.arange(math.prod(shape), dtype=np.uint16).reshape(shape)
    view = np.swapaxes(data, -1, -2)
    copy = runtime.contiguous(view)
    assert copy.flags.c_contiguous and np.array_equal(copy, view)
    assert runtime.contiguous(data) is data  # already contiguous: no copy
