"""Streaming, in-memory conversion of tensors (no files): for trainers that push weights to an inference engine.

`import_hf` turns HF `(name, tensor)` pairs into native ones and `export_hf` the reverse. Inputs come in any
order; each output is yielded as soon as all of its inputs have arrived, and only incomplete groups (for example
K waiting for V) and the original of a tied copy are held. Unknown, duplicate and mis-shaped tensors raise at once;
missing ones at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from weightport import api, families
from weightport.core import dtypes, ops
from weightport.core.plan import _hf_shapes, _part_sizes, choose, not_a_copy, tied_copies
from weightport.core.weights import Binding, walk
from weightport.errors import ConfigError, CoverageError, report
from weightport.native.model import parameters


def _tensor(array: np.ndarray, like: Any) -> Any:
    return dtypes.to_torch(array, dtypes.CODES[str(like.dtype).removeprefix("torch.")])


def _bindings(native: dict, spec) -> tuple[list[Binding], list[Binding], dict[str, tuple[int, ...]]]:
    """The bindings of the native model's tensors (every HF layout), those of tensors it lacks, and its inventory."""
    inventory = parameters(native)
    walked = walk(spec.weights, native)
    if any(b.carried for b in walked):
        parts = ", ".join(sorted({b.hf[0] for b in walked if b.carried}))
        raise ConfigError(f"{spec.name} carries parts the native model lacks ({parts}), which "
                          "the in-memory conversion does not hold: convert the folders, or pass the text model's "
                          f"format (format={spec.text[1]!r}) to convert the text model alone")
    return ([b for b in walked if b.native in inventory], [b for b in walked if b.native not in inventory],
            inventory)


def _differs(copy: Any, original: Any) -> str | None:
    """How a tied copy differs from its original (None if it is the same tensor, or bit-equal)."""
    if (tuple(copy.shape), copy.dtype) != (tuple(original.shape), original.dtype):
        return f"{list(copy.shape)} {copy.dtype} against {list(original.shape)} {original.dtype}"
    if (copy.device, copy.data_ptr(), copy.stride()) == (original.device, original.data_ptr(), original.stride()):
        return None
    a, b = dtypes.from_torch(copy), dtypes.from_torch(original)
    if np.array_equal(a, b):
        return None
    return f"first at element {[int(i) for i in np.unravel_index(int(np.argmax(a != b)), a.shape)]}"


def import_hf(hf_config: dict, tensors: Iterable[tuple[str, Any]], format: str | None = None
              ) -> Iterator[tuple[str, Any]]:
    """Native `(name, tensor)` pairs (names without `/weights`) from HF ones, for the model `hf_config` describes.

    Where the family reads several HF layouts of the same tensors (`Alternatives`: Mixtral's per-expert or stacked
    experts, Llava's `save_pretrained` names or transformers 5's module names), the first tensor of a layer (or of the
    model) that arrives decides its layout. A tied copy (`lm_head.weight` of a model whose config ties it to the
    embedding, as every `model.state_dict()` of such a model lists it) is accepted when it is the same tensor as its
    original or bit-equal to it, and dropped; the original is held until its copy arrives or the input ends. Raises
    CoverageError at once for an unknown, repeated or mis-shaped tensor, one of another layout than its layer's, or a
    tied copy that differs (naming both), and at the end for missing ones."""
    spec = families.load(format or families.detect(hf_config))
    native = api.import_config(spec, hf_config)[1]
    bindings, absent, inventory = _bindings(native, spec)
    expected, sites, option_of = {}, {}, {}
    for b in bindings:
        shape = inventory[b.native]
        expected.update(zip(b.hf, ((b, s) for s in _hf_shapes(b, shape, _part_sizes(b, shape) or []))))
        if b.alternative is not None:
            sites.setdefault(b.alternative[0], []).append(b)
            option_of.update(dict.fromkeys(b.hf, b.alternative))
    originals: dict[str, list[tuple[str, tuple]]] = {}  # tied copy -> (original, the layouts that pair them)
    for copy, original in tied_copies(bindings, absent):
        originals.setdefault(copy.hf[0], []).append(
            (original.hf[0], tuple(a for a in (copy.alternative, original.alternative) if a is not None)))
        if copy.alternative is not None:
            option_of[copy.hf[0]] = copy.alternative
    copies_of: dict[str, list[str]] = {}
    for copy, pairs in originals.items():
        for original, _ in pairs:
            copies_of.setdefault(original, []).append(copy)
    at_site: dict[str, list[tuple[str, tuple[str, str]]]] = {}
    for name, where in option_of.items():
        at_site.setdefault(where[0], []).append((name, where))
    layouts: dict[str, str] = {}  # alternative site -> the option its first tensor came in
    elsewhere: dict[str, tuple[str, str]] = {}  # HF name -> (site, option) of the options not taken
    held: dict[str, Any] = {}  # a tied copy or its original, until the other arrives
    pending: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()

    def decide(site: str, option: str) -> None:
        layouts[site] = option
        for name, where in at_site[site]:
            if where[1] != option:
                expected.pop(name, None)
                elsewhere[name] = where

    def compare(copy: str) -> None:
        """Compare a held copy with its original once both arrived in the layouts that pair them; then drop it."""
        for original, where in originals[copy]:
            if original in held and all(layouts.get(site) == option for site, option in where):
                detail = _differs(held.pop(copy), held[original])
                if detail is not None:
                    raise CoverageError(f"{spec.name}: {not_a_copy(copy, original, detail)}")
                if not any(c in held for c in copies_of[original]):
                    del held[original]
                return

    for name, tensor in tensors:
        if name in seen:
            raise CoverageError(f"{spec.name}: tensor {name!r} was given twice")
        seen.add(name)
        if name in elsewhere:
            site, option = elsewhere[name]
            where, unit = (site, "each layer") if site else ("the whole model", "every tensor")
            raise CoverageError(f"{spec.name}: tensor {name!r} is in HF layout {option!r} of {where}, whose first "
                                f"tensor came in layout {layouts[site]!r}; give {unit} in one layout")
        if name in option_of and option_of[name][0] not in layouts:
            decide(*option_of[name])
        if name in originals:
            held[name] = tensor
            compare(name)
            continue
        if name in copies_of:
            held[name] = tensor
            for copy in copies_of[name]:
                if copy in held:
                    compare(copy)
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
    first = {site: options[0].alternative[1] for site, options in sites.items()}  # where none arrived
    missing = [name for name, (b, _) in expected.items()
               if b.alternative is None or layouts.get(b.alternative[0], first[b.alternative[0]]) == b.alternative[1]]
    unchecked = sorted(f"the original of the tied copy {copy}" for copy in held if copy in originals)
    if missing or unchecked:
        raise CoverageError(report(f"{spec.name}: tensors never arrived", sorted(missing) + unchecked))


def export_hf(native_config: dict, tensors: Iterable[tuple[str, Any]], format: str | None = None, *,
              origin: str | Path | api.Origin | None = None) -> Iterator[tuple[str, Any]]:
    """HF `(name, tensor)` pairs from native ones; `native_config` is the `config` mapping of a native checkpoint's
    metadata.yaml (with `base_model`). The HF format is `format`, else that of `origin` (the HF model training started
    from, whose architecture the config must have), else the only format that can describe the architecture."""
    spec, native, _ = api.export_target(native_config, format, origin)
    bindings, _, inventory = _bindings(native, spec)
    bindings = choose(bindings)[0]  # the first HF layout of each site
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
