"""Streaming, in-memory conversion of tensors (no files): for trainers that push weights to an inference engine.

`import_hf` turns HF `(name, tensor)` pairs into native ones and `export_hf` the reverse. Inputs come in any
order; each output is yielded as soon as all of its inputs have arrived, and only incomplete groups (for example
K waiting for V) are held. Unknown, duplicate and mis-shaped tensors raise at once; missing ones at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from weightport import api, families
from weightport.core import dtypes, ops
from weightport.core.plan import _hf_shapes, _part_sizes
from weightport.core.weights import Binding, walk
from weightport.errors import CoverageError, report
from weightport.native.model import parameters

def _tensor(array: np.ndarray, like: Any) -> Any:
    return dtypes.to_torch(array, dtypes.CODES[str(like.dtype).removeprefix("torch.")])


def _bindings(native: dict, spec) -> tuple[list[Binding], dict[str, tuple[int, ...]]]:
    inventory = parameters(native)
    return [b for b in walk(spec.weights, native) if b.native in inventory], inventory


def import_hf(hf_config: dict, tensors: Iterable[tuple[str, Any]], format: str | None = None
              ) -> Iterator[tuple[str, Any]]:
    """Native `(name, tensor)` pairs (names without `/weights`) from HF ones, for the model `hf_config` describes."""
    spec = families.load(format or families.detect(hf_config.get("model_type")))
    native = api.import_config(spec, hf_config)[1]
    bindings, inventory = _bindings(native, spec)
    expected = {}
    for b in bindings:
        shape = inventory[b.native]
        expected.update(zip(b.hf, ((b, s) for s in _hf_shapes(b, shape, _part_sizes(b, shape) or []))))
    pending: dict[str, dict[str, Any]] = {}
    for name, tensor in tensors:
        if name not in expected:
            raise CoverageError(f"{spec.name}: tensor {name!r} is claimed by no rule")
        binding, shape = expected.pop(name)
        if tuple(tensor.shape) != shape:
            raise CoverageError(f"{spec.name}: tensor {name!r} has shape {list(tensor.shape)}, the config implies "
                                f"{list(shape)}")
        group = pending.setdefault(binding.native, {})
        group[name] = tensor
        if len(group) == len(binding.hf):
            del pending[binding.native]
            parts = [group[h] for h in binding.hf]
            native = ops.to_native(binding.ops, binding.dim, [dtypes.from_torch(p) for p in parts])
            yield binding.native, _tensor(native, parts[0])
    if expected:
        raise CoverageError(report(f"{spec.name}: tensors never arrived", sorted(expected)))


def export_hf(native_config: dict, tensors: Iterable[tuple[str, Any]], format: str | None = None, *,
              origin: str | Path | api.Origin | None = None) -> Iterator[tuple[str, Any]]:
    """HF `(name, tensor)` pairs from native ones; `native_config` is the `config` mapping of a native checkpoint's
    metadata.yaml (with `base_model`). The HF format is `format`, else that of `origin` (the HF model training started
    from, whose architecture the config must have), else the only format that can describe the architecture."""
    spec, native, _ = api.export_target(native_config, format, origin)
    bindings, inventory = _bindings(native, spec)
    by_name = {b.native: b for b in bindings}
    remaining = set(by_name)
    for name, tensor in tensors:
        name = name.removesuffix("/weights")
        if name not in remaining:
            why = "was given twice" if name in by_name else "is not a parameter of this model"
            raise CoverageError(f"{spec.name}: native tensor {name!r} {why}")
        if tuple(tensor.shape) != inventory[name]:
            raise CoverageError(f"{spec.name}: native tensor {name!r} has shape {list(tensor.shape)}, the config "
                                f"implies {list(inventory[name])}")
        remaining.discard(name)
        b = by_name[name]
        parts = ops.to_hf(b.ops, b.dim, dtypes.from_torch(tensor), _part_sizes(b, tuple(tensor.shape)) or [])
        for hf_name, part in zip(b.hf, parts):
            yield hf_name, _tensor(part, tensor)
    if remaining:
        raise CoverageError(report(f"{spec.name}: native tensors never arrived", sorted(remaining)))


def hf_config(native_config: dict, format: str | None = None, layout: str | None = None, *,
              origin: str | Path | api.Origin | None = None) -> dict:
    """The HF config.json mapping for a native `config` mapping (with `base_model`). With `origin` (an HF folder, or
    the native folder weightport wrote at import) every key of its config.json comes back, in its layout."""
    spec, native, found = api.export_target(native_config, format, origin)
    if found is None:
        return api.export_config(spec, native, layout or spec.hf_layout)
    return api.export_config(spec, native, layout or found.hf_layout, original=found.hf_config)
