"""Tests of the dtype table, raw views and casts: casts must equal torch's `.to()` bit for bit, and importing
weightport does not import torch (only a cast does)."""

from __future__ import annotations

import mmap
import subprocess
import sys

import numpy as np
import pytest
import torch

from weightport.core import dtypes

FLOATS = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
CODES = {dt: code for code, dt in FLOATS.items()}
SIGNED = {2: torch.int16, 4: torch.int32}


def raw(t: torch.Tensor) -> np.ndarray:
    return t.contiguous().view(SIGNED[t.element_size()]).numpy().view(dtypes.raw(CODES[t.dtype]))


def values(dtype: torch.dtype) -> torch.Tensor:
    """Random values over many magnitudes plus the edge cases of rounding: signed zeros, infinities, NaN,
    subnormals, numbers that overflow F16 or BF16, and halfway ties."""
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(500, generator=g) * torch.exp2(torch.randint(-30, 30, (500,), generator=g).float())
    edges = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-45, -1e-40, 6e-8, 3e-5, 65504.0,
                          65520.0, 1e5, 3.4e38, -3.4e38, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-11, 1.0 + 3 * 2**-11])
    return torch.cat([spread, edges]).to(dtype)


def test_table_matches_torch() -> None:
    assert dtypes.SIZES.keys() == dtypes.TORCH.keys()
    for code, name in dtypes.TORCH.items():
        assert getattr(torch, name).itemsize == dtypes.SIZES[code], code


@pytest.mark.parametrize("code", list(dtypes.SIZES))
def test_raw_is_an_unsigned_int_of_the_same_width(code: str) -> None:
    kind = dtypes.raw(code)
    assert kind.kind == "u" and kind.itemsize == dtypes.SIZES[code] and kind.byteorder in "<=|"


@pytest.mark.parametrize("src, dst", [(a, b) for a in FLOATS for b in FLOATS if a != b])
def test_cast_equals_torch_bit_for_bit(src: str, dst: str) -> None:
    x = values(FLOATS[src])
    before = raw(x).copy()
    got = dtypes.cast(raw(x), src, dst)
    assert got.dtype == dtypes.raw(dst) and got.shape == x.shape
    assert np.array_equal(got, raw(x.to(FLOATS[dst])))
    assert np.array_equal(raw(x), before)  # the input is left alone


def test_cast_of_a_strided_array_keeps_its_shape() -> None:
    x = values(torch.float32)[:512].reshape(16, 32)
    got = dtypes.cast(raw(x).T, "F32", "BF16")
    assert got.shape == (32, 16)
    assert np.array_equal(got, raw(x.T.to(torch.bfloat16)))


def test_cast_of_a_scalar_keeps_its_shape() -> None:
    got = dtypes.cast(raw(torch.tensor(1.5)), "F32", "BF16")
    assert got.shape == ()


def test_weightport_does_not_import_torch() -> None:
    code = """
import sys
from weightport import api
from weightport.core import dtypes, runtime
from weightport.io import safetensors
assert "torch" not in sys.modules, "importing weightport loaded torch"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_empty_gives_large_arrays_their_own_mapping() -> None:
    """Large scratch arrays are anonymous mappings (unmapped when dropped, so no allocator keeps them); small ones
    are ordinary arrays. Both are writable and of the asked shape and dtype."""
    big = dtypes.empty((3, dtypes.OWN_MAPPING_FROM // 2), np.uint16)
    small = dtypes.empty(5, np.uint16)
    def owner(array: np.ndarray) -> object:
        while isinstance(array, np.ndarray) and array.base is not None:
            array = array.base
        return array.obj if isinstance(array, memoryview) else array

    assert isinstance(owner(big), mmap.mmap) and not isinstance(owner(small), mmap.mmap)
    for array, shape in ((big, (3, dtypes.OWN_MAPPING_FROM // 2)), (small, (5,))):
        array[...] = 7
        assert array.shape == shape and array.dtype == np.uint16 and (array == 7).all()
    assert dtypes.empty((0, 4), np.float32).shape == (0, 4)
