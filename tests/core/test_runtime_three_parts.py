"""Steps over three or more parts: byte moves at running offsets, transposed parts stacked row after row; and
`contiguous` of a strided 1-D view."""

from __future__ import annotations

import numpy as np
import pytest

from weightport.core import runtime
from weightport.core.ops import T
from weightport.core.plan import Ref, build
from weightport.core.weights import Fuse, walk
from test_runtime import Memory

PARTS = {"a.weight": (2, 4), "b.weight": (3, 4), "c.weight": (1, 4)}


@pytest.mark.parametrize("transposed", [False, True])
def test_three_parts_concatenate_and_split_back(transposed: bool) -> None:
    ops = (T(),) if transposed else ()
    hf_shapes = {n: s[::-1] if transposed else s for n, s in PARTS.items()}
    bindings = walk((Fuse("w.weight", *PARTS, sizes=(2, 3, 1), ops=ops),), {})
    sources = {n: Ref(n, s, "F32") for n, s in hf_shapes.items()}
    forward = build("toy", "from_hf", bindings, {"w.weight": (6, 4)}, sources, None, {})
    if not transposed:
        step = forward.steps[0]
        assert [(s.name, d.name, a, b, n) for s, d, a, b, n in runtime.moves(step, "from_hf")] == [
            ("a.weight", "w.weight", 0, 0, 8), ("b.weight", "w.weight", 0, 8, 12), ("c.weight", "w.weight", 0, 20, 4)]
    hf = {n: np.arange(100 * i, 100 * i + np.prod(s), dtype=np.uint32).reshape(s)
          for i, (n, s) in enumerate(hf_shapes.items())}
    sink = Memory(hf, [ref for step in forward.steps for ref in step.dst])
    runtime.run(forward, sink, sink, workers=1)
    expected = np.concatenate([a.T if transposed else a for a in hf.values()])
    assert np.array_equal(sink.result()["w.weight"], expected)

    backward = build("toy", "to_hf", bindings, {"w.weight": (6, 4)}, {"w.weight": Ref("w.weight", (6, 4), "F32")},
                     None, {})
    back = Memory({"w.weight": expected}, [ref for step in backward.steps for ref in step.dst])
    runtime.run(backward, back, back, workers=1)
    assert all(np.array_equal(back.result()[n], a) for n, a in hf.items())


def test_contiguous_copies_a_strided_vector() -> None:
    view = np.arange(10, dtype=np.uint16)[::3]
    out = runtime.contiguous(view)
    assert out.flags.c_contiguous and np.array_equal(out, [0, 3, 6, 9])
