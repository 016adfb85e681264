"""Tensor layout operations, each with its inverse and its effect on shapes.

An op maps one HF tensor part to its native layout (`to_native`) and back (`to_hf`). Ops are applied to every
part of a weight rule, before the parts are concatenated on the native side. Shapes are computed from headers
alone, so a plan knows every shape before any tensor data is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class T:
    """Transpose two dims (the last two by default); its own inverse. Example: HF down_proj (H, I) <-> native (I, H)."""

    a: int = -2
    b: int = -1

    def native_shape(self, shape: Shape) -> Shape:
        out = list(shape)
        out[self.a], out[self.b] = out[self.b], out[self.a]
        return tuple(out)

    hf_shape = native_shape

    def to_native(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.transpose(self.a, self.b)

    to_hf = to_native

    def __str__(self) -> str:
        return "transpose" if (self.a, self.b) == (-2, -1) else f"transpose({self.a},{self.b})"


@dataclass(frozen=True, slots=True)
class Flatten:
    """Merge HF dims `dim .. dim+len(sizes)-1` into one native dim; `sizes` are the HF sizes (ints once resolved;
    config paths in a declaration; one may be -1). Example: patch conv (O, 3, p, p) <-> native (O, 3*p*p) is
    Flatten(1, (3, p, p)); stacked experts (E, 2I, H) <-> native (E*2I, H) is Flatten(0, ("experts", -1))."""

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

    def to_native(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.flatten(self.dim, self.dim + len(self.sizes) - 1)

    def to_hf(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.unflatten(self.dim, tuple(self.sizes))

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


def to_native(ops: tuple[Op, ...], dim: int, parts: list[torch.Tensor]) -> torch.Tensor:
    """Apply the ops to each HF part, then concatenate along `dim`."""
    converted = []
    for part in parts:
        for op in ops:
            part = op.to_native(part)
        converted.append(part)
    return converted[0] if len(converted) == 1 else torch.cat(converted, dim)


def to_hf(ops: tuple[Op, ...], dim: int, tensor: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Split along `dim` into parts of `sizes` (native layout), then undo the ops on each part."""
    parts = list(torch.split(tensor, sizes, dim)) if len(sizes) > 1 else [tensor]
    out = []
    for part in parts:
        for op in reversed(ops):
            part = op.to_hf(part)
        out.append(part)
    return out
