"""Casts of raw arrays (`weightport.core.dtypes.cast`): bf16 -> f64 on the numpy path, read-only (memory-mapped)
inputs on the torch path, both bit for bit as torch casts."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from weightport.core import dtypes


def bits(t: torch.Tensor) -> np.ndarray:
    signed = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(signed).numpy().view(f"<u{t.element_size()}")


def test_bf16_to_f64_matches_torch() -> None:
    values = torch.tensor([[0.0, -1.5, 3.140625], [1e30, float("inf"), -2.0**-130]], dtype=torch.bfloat16)
    got = dtypes.cast(bits(values), "BF16", "F64")
    assert got.dtype == np.uint64 and got.shape == (2, 3)
    assert np.array_equal(got, bits(values.to(torch.float64)))


def test_read_only_inputs_cast_through_torch_without_warnings_or_writes() -> None:
    values = torch.linspace(-3, 3, 12, dtype=torch.float16).reshape(3, 4)
    raw = bits(values).copy()
    raw.flags.writeable = False  # like a memory map opened read-only
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when handed memory it may not write
        got = dtypes.cast(raw, "F16", "F32")
    assert got.shape == (3, 4) and np.array_equal(got, bits(values.to(torch.float32)))
    assert np.array_equal(raw, bits(values))
