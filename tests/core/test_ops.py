"""Tests of the tensor layout ops on raw-bit numpy arrays: exact inverses, shape functions, multi-part
concat/split, and which layouts keep the bytes as they are."""

from __future__ import annotations

import numpy as np
import pytest

from weightport.core import ops
from weightport.core.ops import Flatten, T


def _random(*shape: int, seed: int = 0) -> np.ndarray:
    """Random F32 bit patterns (NaNs and all): ops never look at values."""
    return np.random.default_rng(seed).integers(0, 2**32, shape, dtype=np.uint32)


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


@pytest.mark.parametrize("op, shape", [
    (T(), (3, 5)),
    (T(), (2, 3, 5)),
    (T(0, 2), (2, 3, 5)),
    (Flatten(1, (3, 2, 2)), (4, 3, 2, 2)),
    (Flatten(0, (2, 3)), (2, 3, 7)),
    (Flatten(1, (5,)), (2, 5, 3)),
    (Flatten(0, (2, -1)), (2, 3, 7)),
])
def test_op_round_trip_and_shapes(op, shape) -> None:
    hf = _random(*shape)
    native = op.to_native(hf)
    assert native.shape == op.native_shape(shape)
    assert op.hf_shape(native.shape) == shape
    assert _bits_equal(op.to_hf(native), hf)


def test_transpose_moves_values() -> None:
    x = np.arange(6, dtype=np.uint16).reshape(2, 3)
    assert T().native_shape((2, 3)) == (3, 2)
    assert np.array_equal(T().to_native(x), [[0, 3], [1, 4], [2, 5]])


def test_flatten_shapes() -> None:
    op = Flatten(1, (3, 4, 4))
    assert op.native_shape((8, 3, 4, 4)) == (8, 48)
    assert op.hf_shape((8, 48)) == (8, 3, 4, 4)
    x = np.arange(96, dtype=np.uint32)
    assert np.array_equal(op.to_native(x.reshape(2, 3, 4, 4)), x.reshape(2, 48))
    assert Flatten(0, (4, -1)).hf_shape((12, 5)) == (4, 3, 5)


def test_op_chain_shapes_follow_arrays() -> None:
    chain = (Flatten(1, (3, 2)), T())
    hf = _random(4, 3, 2)
    native = ops.to_native(chain, 0, [hf])
    assert native.shape == ops.native_shape(chain, (4, 3, 2)) == (6, 4)
    assert ops.hf_shape(chain, (6, 4)) == (4, 3, 2)
    [back] = ops.to_hf(chain, 0, native, [6])
    assert _bits_equal(back, hf)


def test_single_part_passes_through() -> None:
    x = _random(4, 3)
    assert ops.to_native((), 0, [x]) is x
    assert ops.to_hf((), 0, x, [4])[0] is x


@pytest.mark.parametrize("dim, shapes", [
    (0, [(4, 3), (4, 3)]),  # equal parts, like K and V
    (0, [(6, 3), (2, 3), (2, 3)]),  # unequal parts, like Q, K, V with grouped heads
    (1, [(3, 2), (3, 5)]),
])
def test_parts_round_trip(dim: int, shapes: list) -> None:
    parts = [_random(*s, seed=i) for i, s in enumerate(shapes)]
    native = ops.to_native((), dim, parts)
    assert native.shape[dim] == sum(s[dim] for s in shapes)
    assert np.array_equal(native.take(range(shapes[0][dim]), dim), parts[0])
    back = ops.to_hf((), dim, native, [s[dim] for s in shapes])
    assert len(back) == len(parts)
    assert all(_bits_equal(b, p) for b, p in zip(back, parts))


def test_parts_with_transpose_concat_in_native_layout() -> None:
    # HF parts (H, I1) and (H, I2) are transposed to (I1, H), (I2, H), then stacked along native dim 0.
    a, b = _random(3, 2, seed=1), _random(3, 4, seed=2)
    native = ops.to_native((T(),), 0, [a, b])
    assert native.shape == (6, 3)
    assert np.array_equal(native[:2], a.T) and np.array_equal(native[2:], b.T)
    back = ops.to_hf((T(),), 0, native, [2, 4])
    assert _bits_equal(back[0], a) and _bits_equal(back[1], b)


def test_to_hf_rejects_sizes_that_do_not_add_up() -> None:
    with pytest.raises(ValueError):
        ops.to_hf((), 0, _random(5, 2), [2, 2])


@pytest.mark.parametrize("chain, dim, keeps", [
    ((), 0, True),  # a rename or a concat along dim 0
    ((Flatten(0, (2, -1)),), 0, True),  # stacked experts
    ((Flatten(1, (3, 2)),), 0, True),  # a reshape of each part
    ((), 1, False),  # parts interleave row by row
    ((T(),), 0, False),
    ((Flatten(1, (3, 2)), T()), 0, False),
])
def test_keeps_bytes(chain: tuple, dim: int, keeps: bool) -> None:
    assert ops.keeps_bytes(chain, dim) is keeps
    parts = [_random(2, 3, 2, seed=1), _random(2, 3, 2, seed=2)]
    native = ops.to_native(chain, dim, parts)
    laid_end_to_end = np.concatenate([p.reshape(-1) for p in parts]).tobytes()
    assert (np.ascontiguousarray(native).tobytes() == laid_end_to_end) is keeps


def test_op_names() -> None:
    assert str(T()) == "transpose"
    assert str(T(0, 2)) == "transpose(0,2)"
    assert str(Flatten(1, (3, 16, 16))) == "flatten(1,3x16x16)"
