"""Transposes of inputs too large to map (`runtime.BLOCKS_ABOVE`): read in bands of columns or blocks of rows with
`Source.read_block`, written as whole rows or as blocks, bit for bit what torch computes; the threshold is the
largest input of the step."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from weightport.core import runtime
from weightport.core.ops import T
from weightport.core.plan import Ref, build
from weightport.core.weights import Fuse, Tensor, walk
from test_runtime import COMPUTE_RULES, TORCH, Memory, assert_bits_equal, hf_tensors, native_tensors, plan, raw, raws

TRANSPOSED = COMPUTE_RULES[0], COMPUTE_RULES[2]  # down (4, 8) -> (8, 4); out_a (4, 2) and out_b (4, 3) -> (5, 4)


class Blocks(Memory):
    """Memory with `read_block`, which checks the block lies inside the tensor."""

    def read_block(self, ref, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        self._call("read_block", ref.name)
        (r0, r1), (c0, c1) = rows, cols
        assert 0 <= r0 < r1 <= ref.shape[0] and 0 <= c0 < c1 <= ref.shape[1], (ref.name, rows, cols)
        return self.tensors[ref.name][r0:r1, c0:c1].copy()


def run_blocked(the_plan, tensors) -> Blocks:
    sink = Blocks(tensors, [ref for step in the_plan.steps for ref in step.dst])
    runtime.run(the_plan, sink, sink, workers=1)
    return sink


@pytest.mark.parametrize("dtype", [None, "BF16"])
def test_large_transposes_read_blocks_and_give_torchs_bits(monkeypatch, dtype: str | None) -> None:
    monkeypatch.setattr(runtime, "BLOCKS_ABOVE", 32)  # bytes: below every input of `down`, the largest of `out`
    monkeypatch.setattr(runtime, "BLOCK", 40)  # bands of 2 or 3 columns, blocks of 2, 3 or 5 rows: some uneven
    hf = hf_tensors()
    native = run_blocked(plan("from_hf", TRANSPOSED, dtype=dtype), raws(hf))
    to = TORCH[dtype or "F32"]
    expected = native_tensors(hf)
    assert_bits_equal(native.result(), {n: raw(expected[n].to(to)) for n in native.out})
    assert "view" not in native.methods()
    back = run_blocked(plan("to_hf", TRANSPOSED, code=dtype or "F32", dtype="F32"), native.result())
    assert_bits_equal(back.result(), {n: raw(hf[n].to(to).float()) for n in back.out})
    assert "view" not in back.methods()
    if dtype is None:
        # down_proj (4, 8): 4 rows <= 8 columns, bands of 40 // (4 * 4) = 2 columns, written as whole output rows;
        # out_a (4, 2), out_b (4, 3): more rows than columns, blocks of 5 and 3 rows written as output columns
        assert Counter(native.calls) == {("read_block", "down_proj.weight"): 4, ("write", "down.weight"): 4,
                                         ("read_block", "out_a.weight"): 1, ("read_block", "out_b.weight"): 2,
                                         ("write_block", "out.weight"): 3}
        # down (8, 4): blocks of 2 rows; out (5, 4) split into rows 0-2 (one band of 5 columns) and 2-5 (3 + 1)
        assert Counter(back.calls) == {("read_block", "down.weight"): 4, ("write_block", "down_proj.weight"): 4,
                                       ("read_block", "out.weight"): 3, ("write", "out_a.weight"): 1,
                                       ("write", "out_b.weight"): 2}


def test_inputs_up_to_the_threshold_are_mapped_whole(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "BLOCKS_ABOVE", 48)  # out_b (4, 3) F32 is 48 bytes: `out` is mapped, `down` not
    hf = hf_tensors()
    native = run_blocked(plan("from_hf", TRANSPOSED), raws(hf))
    assert_bits_equal(native.result(), raws({n: native_tensors(hf)[n] for n in native.out}))
    assert {name for method, name in native.calls if method == "view"} == {"out_a.weight", "out_b.weight"}
    assert {name for method, name in native.calls if method == "read_block"} == {"down_proj.weight"}


def test_three_transposed_parts_of_a_tall_matrix(monkeypatch) -> None:
    """Three parts (offsets past the first), and a part starting below row 0 with more rows than columns."""
    monkeypatch.setattr(runtime, "BLOCKS_ABOVE", 0)
    monkeypatch.setattr(runtime, "BLOCK", 8)
    shapes = {"a.weight": (2, 2), "b.weight": (2, 6), "c.weight": (2, 1)}  # HF; native parts are (2|6|1, 2)
    bindings = walk((Fuse("w.weight", *shapes, sizes=(2, 6, 1), ops=(T(),)),), {})
    hf = {n: np.arange(100 * i, 100 * i + np.prod(s), dtype=np.uint32).reshape(s)
          for i, (n, s) in enumerate(shapes.items())}
    forward = build("toy", "from_hf", bindings, {"w.weight": (9, 2)}, {n: Ref(n, s, "F32") for n, s in shapes.items()},
                    None, {})
    native = run_blocked(forward, hf)
    expected = np.concatenate([a.T for a in hf.values()])
    assert np.array_equal(native.result()["w.weight"], expected) and "view" not in native.methods()
    backward = build("toy", "to_hf", bindings, {"w.weight": (9, 2)}, {"w.weight": Ref("w.weight", (9, 2), "F32")},
                     None, {})
    back = run_blocked(backward, {"w.weight": expected})
    assert ("write_block", "b.weight") in back.calls and "view" not in back.methods()
    assert all(np.array_equal(back.result()[n], a) for n, a in hf.items())


def test_only_plain_2d_transposes_take_the_blocked_path(monkeypatch) -> None:
    """A concat along dim 1 and a transpose of 3-D tensors are views whatever their size."""
    monkeypatch.setattr(runtime, "BLOCKS_ABOVE", 0)
    shapes = {"gate.weight": (4, 3), "up.weight": (4, 3), "e.weight": (2, 4, 3)}
    rules = (Fuse("gate_up.weight", "gate.weight", "up.weight", dim=1), Tensor("e.weight", "e.weight", ops=(T(),)))
    hf = {n: np.arange(100 * i, 100 * i + np.prod(s), dtype=np.uint32).reshape(s)
          for i, (n, s) in enumerate(shapes.items())}
    forward = build("toy", "from_hf", walk(rules, {}), {"gate_up.weight": (4, 6), "e.weight": (2, 3, 4)},
                    {n: Ref(n, s, "F32") for n, s in shapes.items()}, None, {})
    native = run_blocked(forward, hf)
    assert "read_block" not in native.methods()
    assert np.array_equal(native.result()["gate_up.weight"], np.concatenate([hf["gate.weight"], hf["up.weight"]], 1))
    assert np.array_equal(native.result()["e.weight"], hf["e.weight"].swapaxes(1, 2))
