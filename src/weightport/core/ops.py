"""Tensor layout operations, each with its inverse and its effect on shapes.

An op maps one HF tensor part to its native layout (`to_native`) and back (`to_hf`). Ops are applied to every
part of a weight rule, before the parts are concatenated on the native side. Shapes are computed from headers
alone, so a plan knows every shape before any tensor data is read. Arrays are numpy arrays of raw bits (see
`weightport.core.dtypes`) in the file runtime, torch tensors in memory (`weightport.stream`): layout changes never
look at values, and on torch tensors a transpose, a reshape and a split are views (a split along the first
dimension, or a reshape of contiguous bytes, stays contiguous); only a concatenation or a reshape that no strides
allow copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported only by the in-memory path that hands it tensors
    import torch  # noqa: F401

Shape = tuple[int, ...]
Array = "np.ndarray | torch.Tensor"


@dataclass(frozen=True, slots=True)
class T:
    """Transpose two dims (the last two by default); its own inverse.
    Example: HF down_proj (H, I) <-> native (I, H)."""

    a: int = -2
    b: int = -1

    def native_shape(self, shape: Shape) -> Shape:
        out = list(shape)
        out[self.a], out[self.b] = out[self.b], out[self.a]
        return tuple(out)

    hf_shape = native_shape

    def to_native(self, array: np.ndarray) -> np.ndarray:
        return array.swapaxes(self.a, self.b)

    to_hf = to_native

    def __str__(self) -> str:
        return "transpose" if (self.a, self.b) == (-2, -1) else f"transpose({self.a},{self.b})"


@dataclass(frozen=True, slots=True)
class Flatten:
    """Merge HF dims `dim .. dim+len(sizes)-1` into one native dim; `sizes` are the HF sizes (ints once resolved;
    config paths in a declaration; one may be -1). Example: patch conv (O, 3, p, p) <-> native (O, 3*p*p) is
    Flatten(1, (3, p, p)); stacked experts (E, 2I, H) <-> native (E*2I, H) is Flatten(0, ("experts", -1)).
    It only reshapes: the bytes stay as they are."""

    dim: int
    sizes: tuple

    def native_shape(self, shape: Shape) -> Shape:
        end = self.dim + len(self.sizes)
        return shape[: self.dim] + (math.prod(shape[self.dim : end]),) + shape[end:]

    def hf_shape(self, shape: Shape) -> Shape:
        sizes = list(self.sizes)
        if -1 in sizes:  # one size may be inferred
            known = math.prod(s for s in sizes if s != -1)
            sizes[sizes.index(-1)] = shape[self.dim] // known if known else 0
        return shape[: self.dim] + tuple(sizes) + shape[self.dim + 1 :]

    def to_native(self, array: np.ndarray) -> np.ndarray:
        return array.reshape(self.native_shape(tuple(array.shape)))

    def to_hf(self, array: np.ndarray) -> np.ndarray:
        return array.reshape(self.hf_shape(tuple(array.shape)))

    def __str__(self) -> str:
        return f"flatten({self.dim},{'x'.join(map(str, self.sizes))})"


Op = T | Flatten


def native_shape(ops: tuple[Op, ...], shape: Shape) -> Shape:
    for op in ops:
        shape = op.native_shape(shape)
    return shape


def hf_shape(ops: tuple[Op, ...], shape: Shape) -> Shape:
    for op in reversed(ops):
        shape = op.hf_shape(shape)
    return shape


def keeps_bytes(ops: tuple[Op, ...], dim: int) -> bool:
    """True when parts concatenated along `dim` after `ops` are their bytes laid end to end (no transpose, dim 0)."""
    return dim == 0 and all(isinstance(op, Flatten) for op in ops)


def to_native(ops: tuple[Op, ...], dim: int, parts: list[Array]) -> Array:
    """Apply the ops to each HF part (numpy arrays or torch tensors), then concatenate along `dim` (a single part is
    returned as the ops leave it: the same object when there are none)."""
    converted = []
    for part in parts:
        for op in ops:
            part = op.to_native(part)
        converted.append(part)
    if len(converted) == 1:
        return converted[0]
    if isinstance(converted[0], np.ndarray):
        return np.concatenate(converted, dim)
    import torch as torch_

    return torch_.cat(converted, dim)


def to_hf(ops: tuple[Op, ...], dim: int, array: Array, sizes: list[int]) -> list[Array]:
    """Split `array` (a numpy array or a torch tensor) along `dim` into parts of `sizes` (native layout), views of it,
    then undo the ops on each part. Raises ValueError if the sizes do not add up to the dimension."""
    if sum(sizes) != array.shape[dim]:
        raise ValueError(f"parts of sizes {sizes} do not add up to dim {dim} of shape {list(array.shape)}")
    if len(sizes) == 1:
        parts = [array]
    elif isinstance(array, np.ndarray):
        parts = np.split(array, np.cumsum(sizes)[:-1], dim)
    else:
        parts = list(array.split(sizes, dim))
    out = []
    for part in parts:
        for op in reversed(ops):
            part = op.to_hf(part)
        out.append(part)
    return out
