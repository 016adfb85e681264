"""Safetensors dtype codes: element sizes, raw numpy views, and casts (the only place that needs torch, which is
imported on first use so that planning and byte-level conversions never load it)."""

from __future__ import annotations

import math
import mmap

import numpy as np

SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
         "U16": 2, "U8": 1, "BOOL": 1, "C64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F8_E4M3FNUZ": 1,
         "F8_E5M2FNUZ": 1}
TORCH = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
         "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
         "BOOL": "bool", "C64": "complex64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
         "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz"}
CODES = {name: code for code, name in TORCH.items()}  # torch dtype name -> code
_SIGNED = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}


def raw(code: str) -> np.dtype:
    """The unsigned integer numpy dtype of the same width: tensors are moved and transposed as raw bits."""
    return np.dtype(f"<u{SIZES[code]}")


OWN_MAPPING_FROM = 2**20  # bytes from which `empty` gives an array its own mapping


def empty(shape: int | tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised array, like `np.empty`; a large one lives in its own anonymous mapping, which goes back to
    the system as soon as the array is dropped. (malloc keeps freed blocks of a few MB cached per thread, which would
    make the memory of a conversion grow with the number of threads and tensors, not with the block size.)"""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    size = math.prod(shape) * np.dtype(dtype).itemsize
    if size < OWN_MAPPING_FROM:
        return np.empty(shape, dtype)
    mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if size >= 4 * 2**20 and hasattr(mmap, "MADV_HUGEPAGE"):  # as numpy does for large arrays: fewer TLB misses
        mapping.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(mapping, dtype).reshape(shape)


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    out = empty(bits.shape, np.uint32)
    np.left_shift(bits, 16, out=out, dtype=np.uint32)  # one pass: the ufunc widens as it goes
    return out.view(np.float32)


def _f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """Round to nearest even, every NaN to 0xFFFF, bit for bit as torch does on CPU (in place, in few passes)."""
    bits = values.view(np.uint32)
    rounding = np.right_shift(bits, 16)
    rounding &= 1
    rounding += 0x7FFF
    rounding += bits  # wraps like torch's uint32 arithmetic; NaNs are replaced below
    rounding >>= 16
    out = empty(bits.shape, np.uint16)
    np.copyto(out, rounding, casting="unsafe")
    np.copyto(out, np.uint16(0xFFFF), where=np.isnan(values))
    return out


_NUMPY = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
# Pairs numpy converts bit for bit as torch does (NaN patterns differ between torch's other paths).
_FAST = {("BF16", "F32"), ("BF16", "F64"), ("F32", "BF16")}


def cast(array: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Values of a raw array of dtype `src` converted to `dst`, returned raw (round to nearest even, like torch).

    bf16 <-> fp32 convert with numpy; other pairs load torch."""
    if (src, dst) in _FAST:
        values = _bf16_to_f32(array) if src == "BF16" else array.view(_NUMPY[src])
        if dst == "BF16":
            return _f32_to_bf16(np.ascontiguousarray(values, np.float32)).reshape(array.shape)
        return np.asarray(values, _NUMPY[dst]).view(raw(dst)).reshape(array.shape)  # no copy when already F32
    return from_torch(to_torch(array, src).to(getattr(_torch(), TORCH[dst]))).reshape(array.shape)


def _torch():  # noqa: ANN202 - the torch module, imported on first use
    import torch

    return torch


def to_torch(array: np.ndarray, code: str):  # noqa: ANN201 - a torch.Tensor
    """A raw array as a torch tensor of dtype `code` (sharing memory when the array is contiguous and writable)."""
    torch = _torch()
    signed = np.ascontiguousarray(array.view(_SIGNED[SIZES[code]])).reshape(array.shape)
    if not signed.flags.writeable:  # memory-mapped input: torch wants memory it may write
        signed = signed.copy()
    return torch.from_numpy(signed).view(getattr(torch, TORCH[code]))


def from_torch(tensor) -> np.ndarray:  # noqa: ANN001 - a torch.Tensor
    """A torch tensor's bits as a raw array of its shape (sharing memory)."""
    torch = _torch()
    width = tensor.element_size()
    signed = tensor.detach().cpu().contiguous().view(getattr(torch, _SIGNED[width]))
    return signed.numpy().view(f"<u{width}")
