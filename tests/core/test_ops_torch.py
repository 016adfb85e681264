"""Layout ops on torch tensors (the in-memory path) give what they give on numpy arrays; edge cases of shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightport.core import ops
from weightport.core.ops import Flatten, T


@pytest.mark.parametrize("dim, the_ops", [(0, ()), (1, ()), (0, (T(),))])
def test_torch_concat_and_split_match_numpy(dim: int, the_ops: tuple) -> None:
    a, b = (torch.arange(n * 4, dtype=torch.int32).reshape(4, n) for n in (3, 5))  # (4, 3) and (4, 5)
    parts = [a.T, b.T] if dim == 0 and not the_ops else [a, b]
    native = ops.to_native(the_ops, dim, parts)
    expected = ops.to_native(the_ops, dim, [p.numpy() for p in parts])
    assert isinstance(native, torch.Tensor) and np.array_equal(native.numpy(), expected)
    back = ops.to_hf(the_ops, dim, native, [3, 5])
    assert all(torch.equal(got, part) for got, part in zip(back, parts, strict=True))


def test_parts_that_do_not_add_up_are_refused_with_the_sizes() -> None:
    for array in (np.zeros((5, 2)), torch.zeros(5, 2)):
        with pytest.raises(ValueError, match=r"parts of sizes \[2, 2\] do not add up to dim 0 of shape \[5, 2\]"):
            ops.to_hf((), 0, array, [2, 2])


def test_an_inferred_size_beside_a_zero_size_is_zero() -> None:
    assert Flatten(0, (0, -1)).hf_shape((0, 4)) == (0, 0, 4)
    assert Flatten(0, (2, -1)).hf_shape((6, 4)) == (2, 3, 4)
