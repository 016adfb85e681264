"""Tests of the tensor layout ops: exact inverses, shape functions, and multi-part concat/split."""

from __future__ import annotations

import pytest
import torch

from weightport.core import ops
from weightport.core.ops import Flatten, T


def _random(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("op, shape", [
    (T(), (3, 5)),
    (T(), (2, 3, 5)),
    (T(0, 2), (2, 3, 5)),
    (Flatten(1, (3, 2, 2)), (4, 3, 2, 2)),
    (Flatten(0, (2, 3)), (2, 3, 7)),
    (Flatten(1, (5,)), (2, 5, 3)),
])
def test_op_round_trip_and_shapes(op, shape) -> None:
    hf = _random(*shape)
    native = op.to_native(hf)
    assert tuple(native.shape) == op.native_shape(shape)
    assert op.hf_shape(tuple(native.shape)) == shape
    assert _bits_equal(op.to_hf(native), hf)


def test_transpose_moves_values() -> None:
    x = torch.arange(6.0).reshape(2, 3)
    assert T().native_shape((2, 3)) == (3, 2)
    assert torch.equal(T().to_native(x), torch.tensor([[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]))


def test_flatten_shapes() -> None:
    op = Flatten(1, (3, 4, 4))
    assert op.native_shape((8, 3, 4, 4)) == (8, 48)
    assert op.hf_shape((8, 48)) == (8, 3, 4, 4)
    assert torch.equal(op.to_native(torch.arange(96.0).reshape(2, 3, 4, 4)), torch.arange(96.0).reshape(2, 48))


def test_op_chain_shapes_follow_tensors() -> None:
    chain = (Flatten(1, (3, 2)), T())
    hf = _random(4, 3, 2)
    native = ops.to_native(chain, 0, [hf])
    assert tuple(native.shape) == ops.native_shape(chain, (4, 3, 2)) == (6, 4)
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
    assert torch.equal(native.narrow(dim, 0, shapes[0][dim]), parts[0])
    back = ops.to_hf((), dim, native, [s[dim] for s in shapes])
    assert len(back) == len(parts)
    assert all(_bits_equal(b, p) for b, p in zip(back, parts))


def test_parts_with_transpose_concat_in_native_layout() -> None:
    # HF parts (H, I1) and (H, I2) are transposed to (I1, H), (I2, H), then stacked along native dim 0.
    a, b = _random(3, 2, seed=1), _random(3, 4, seed=2)
    native = ops.to_native((T(),), 0, [a, b])
    assert native.shape == (6, 3)
    assert torch.equal(native[:2], a.T) and torch.equal(native[2:], b.T)
    back = ops.to_hf((T(),), 0, native, [2, 4])
    assert _bits_equal(back[0], a) and _bits_equal(back[1], b)


def test_to_hf_rejects_sizes_that_do_not_add_up() -> None:
    with pytest.raises(RuntimeError):
        ops.to_hf((), 0, _random(5, 2), [2, 2])


def test_op_names() -> None:
    assert str(T()) == "transpose"
    assert str(T(0, 2)) == "transpose(0,2)"
    assert str(Flatten(1, (3, 16, 16))) == "flatten(1,3x16x16)"
