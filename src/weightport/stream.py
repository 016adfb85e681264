"""In-memory conversion of torch tensors (no files): for trainers that push weights to an inference engine.

`import_hf` turns HF `(name, tensor)` pairs into native ones and `export_hf` the reverse, on torch tensors as they
are: on their own device (CPU or GPU: no tensor goes through the host), in their dtype, with any strides. A rename
yields the very tensor it was given; a split along the first dimension yields views of it; only a concatenation
(fused K/V, gate/up, experts) and a transpose copy, into a contiguous tensor on the input's device. Inputs come in
any order; each output is yielded as soon as all of its inputs have arrived, and only incomplete groups (for example
K waiting for V) and the original of a tied copy are held. Unknown, duplicate and mis-shaped tensors raise at once;
missing ones at the end. `buckets` groups the outputs for engines that take weights in buckets of a byte size.
(Files go through `weightport.convert`, whose runtime moves raw bytes between memory-mapped files instead.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from weightport import api, families
from weightport.core import ops
from weightport.core.plan import _hf_shapes, _part_sizes, choose, not_a_copy, tied_copies
from weightport.core.weights import Binding, walk
from weightport.errors import ConfigError, CoverageError, report
from weightport.native.model import parameters

if TYPE_CHECKING:  # torch is imported when tensors are handled, so that `import weightport` does not load it
    import torch


def _bindings(native: dict, spec) -> tuple[list[Binding], list[Binding], dict[str, tuple[int, ...]]]:
    """The bindings of the native model's tensors (every HF layout), those of tensors it lacks, and its inventory."""
    inventory = parameters(native)
    walked = walk(spec.weights, native)
    if any(b.carried for b in walked):
        parts = ", ".join(sorted({b.hf[0] for b in walked if b.carried}))
        raise ConfigError(f"{spec.name} carries parts the native model lacks ({parts}), which the in-memory "
                          "conversion does not hold: convert the folders (weightport.convert; text_only=True "
                          f"exports its {spec.text[0]} alone, as {spec.text[1]})")
    return ([b for b in walked if b.native in inventory], [b for b in walked if b.native not in inventory],
            inventory)


def _transposes(binding: Binding) -> bool:
    return any(isinstance(op, ops.T) for op in binding.ops)


def _differs(copy: torch.Tensor, original: torch.Tensor) -> str | None:
    """How a tied copy differs from its original (None if it is the same tensor, or equal bit for bit)."""
    if (tuple(copy.shape), copy.dtype) != (tuple(original.shape), original.dtype):
        return f"{list(copy.shape)} {copy.dtype} against {list(original.shape)} {original.dtype}"
    if (copy.device, copy.data_ptr(), copy.stride()) == (original.device, original.data_ptr(), original.stride()):
        return None
    import torch

    bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}.get(copy.element_size())  # bit patterns
    a, b = (copy, original.to(copy.device)) if bits is None else (copy.view(bits), original.to(copy.device).view(bits))
    unequal = a != b
    if not bool(unequal.any()):
        return None
    return f"first at element {unequal.nonzero()[0].tolist()}"


def _concatenable(name: str, binding: Binding, parts: list[torch.Tensor]) -> None:
    """Raise CoverageError unless the parts of one native tensor share a dtype and a device."""
    kinds = {(p.dtype, p.device) for p in parts}
    if len(kinds) > 1:
        given = ", ".join(f"{h} {p.dtype} on {p.device}" for h, p in zip(binding.hf, parts))
        raise CoverageError(f"{name}: the HF tensors of native {binding.native!r} are concatenated into one, so they "
                            f"must have one dtype and one device; given {given}")


def import_hf(hf_config: dict, tensors: Iterable[tuple[str, torch.Tensor]], format: str | None = None
              ) -> Iterator[tuple[str, torch.Tensor]]:
    """Native `(name, tensor)` pairs (names without `/weights`) from HF ones, for the model `hf_config` describes:
    a checkpoint's tensors, or a transformers 5 model's `state_dict().items()` or `named_parameters()`.

    Tensors stay on their device and in their dtype: a rename yields the given tensor; a concatenation (K and V,
    gate and up, experts) and a transpose make one contiguous tensor on the parts' device (parts of one tensor must
    share dtype and device).

    Where the family reads several HF layouts of the same tensors (`Alternatives`: Mixtral's per-expert or stacked
    experts, Llava's `save_pretrained` names or transformers 5's module names), the first tensor of a layer (or of the
    model) that arrives decides its layout. A tied copy (`lm_head.weight` of a model whose config ties it to the
    embedding, as every `model.state_dict()` of such a model lists it) is accepted when it is the same tensor as its
    original or bit-equal to it, and dropped; the original is held until its copy arrives or the input ends. Raises
    CoverageError at once for an unknown, repeated or mis-shaped tensor, one of another layout than its layer's, or a
    tied copy that differs (naming both), or parts of one tensor of different dtypes or devices, and at the end for
    missing ones; ConfigError for a config weightport cannot convert, or a wrapper format (its carried parts are
    not held in memory). A config that leaves a value to the checkpoint's files (`ModelSpec.decided_by_files`:
    Mistral 3's tie in transformers 4's layout, decided by whether an `lm_head` is among the tensors) is refused
    too, naming the key to set: a stream cannot tell up front whether a tensor will come."""
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
    held: dict[str, torch.Tensor] = {}  # a tied copy or its original, until the other arrives
    pending: dict[str, dict[str, torch.Tensor]] = {}
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
        if len(binding.hf) == 1:
            out = ops.to_native(binding.ops, binding.dim, [tensor])
            yield binding.native, out.contiguous() if _transposes(binding) else out
            continue
        group = pending.setdefault(binding.native, {})
        group[name] = tensor
        if len(group) == len(binding.hf):
            del pending[binding.native]
            parts = [group[h] for h in binding.hf]
            _concatenable(spec.name, binding, parts)
            yield binding.native, ops.to_native(binding.ops, binding.dim, parts)
    first = {site: options[0].alternative[1] for site, options in sites.items()}  # where none arrived
    missing = [name for name, (b, _) in expected.items()
               if b.alternative is None or layouts.get(b.alternative[0], first[b.alternative[0]]) == b.alternative[1]]
    unchecked = sorted(f"the original of the tied copy {copy}" for copy in held if copy in originals)
    if missing or unchecked:
        hint = ("; a model's named_parameters() leaves out its buffers (state_dict() has them)" if missing else "")
        raise CoverageError(report(f"{spec.name}: tensors never arrived{hint}", sorted(missing) + unchecked))


def export_hf(native_config: dict, tensors: Iterable[tuple[str, torch.Tensor]], format: str | None = None, *,
              origin: str | Path | api.Origin | None = None, state_dict: bool = False
              ) -> Iterator[tuple[str, torch.Tensor]]:
    """HF `(name, tensor)` pairs from native ones (names with or without `/weights`, in any order, e.g. a Fast-LLM
    model's parameters); `native_config` is the `config` mapping of a native checkpoint's metadata.yaml (with
    `base_model`). The HF format is `format`, else that of `origin` (the HF model training started from, whose
    architecture the config must have), else the only format that can describe the architecture.

    Tensors stay on their device and in their dtype: a rename yields the given tensor, a split (K/V, gate/up, one
    expert of a stack) views of it, a transposed tensor (an MLP's down projection) a contiguous copy; so the
    outputs of one input share its memory, and a caller that changes the input in place changes them.

    By default names and layouts are those of the checkpoint `save_pretrained` writes (what vLLM's and SGLang's
    `load_weights` take: Mixtral's experts one by one, Llava's `language_model.model.`; a tied copy is left out).
    With `state_dict=True` they are those a transformers 5 model holds in memory, which its `load_state_dict` takes
    (Mixtral's stacked `mlp.experts.gate_up_proj`, Llava's module names, and a tied copy named too, as the same
    tensor as its original).

    Raises ConfigError for a config no format describes (or several, without `format`) and for a wrapper format,
    whose carried parts are not in memory; CoverageError at once for a tensor that is not a parameter of the model,
    given twice or of another shape than the config implies, and at the end for those that never arrived."""
    spec, native, _ = api.export_target(native_config, format, origin)
    bindings, absent, inventory = _bindings(native, spec)
    prefer = "state_dict" if state_dict else None
    bindings = choose(bindings, prefer=prefer)[0]  # the first HF layout of each site, or the in-memory one
    copies: dict[str, list[str]] = {}
    if state_dict:
        for copy, original in tied_copies(bindings, choose(absent, prefer=prefer)[0]):
            copies.setdefault(original.native, []).append(copy.hf[0])
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
        parts = ops.to_hf(b.ops, b.dim, tensor, _part_sizes(b, tuple(tensor.shape)) or [])
        transposed = _transposes(b)
        for hf_name, part in zip(b.hf, parts):
            yield hf_name, part.contiguous() if transposed else part
        for copy in copies.get(name, ()):
            yield copy, parts[0]
    if remaining:
        raise CoverageError(report(f"{spec.name}: native tensors never arrived", sorted(remaining)))


def buckets(tensors: Iterable[tuple[str, torch.Tensor]], size: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """The `(name, tensor)` pairs in order, grouped into lists of at most `size` bytes (a tensor larger than `size`
    is a list of its own) and of one device each; nothing is copied, and only the list being filled is held. For an
    engine that takes weights in buckets: `for bucket in buckets(export_hf(...), 2**30): engine.load_weights(bucket)`.
    Raises ValueError for a size under 1."""
    if size < 1:
        raise ValueError(f"bucket size must be at least 1 byte, not {size}")
    bucket: list[tuple[str, torch.Tensor]] = []
    filled, device = 0, None
    for name, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and (filled + nbytes > size or tensor.device != device):
            yield bucket
            bucket, filled = [], 0
        bucket.append((name, tensor))
        filled, device = filled + nbytes, tensor.device
    if bucket:
        yield bucket


@dataclass(frozen=True)
class FlatBucket:
    """Tensors laid end to end in one byte buffer: what a collective (`torch.distributed.broadcast`) or an IPC handle
    sends at once. `entries` are `(name, dtype, shape, byte offset)`; offsets are multiples of `ALIGNMENT` bytes."""

    buffer: torch.Tensor  # uint8, 1-D, on the tensors' device
    entries: tuple[tuple[str, torch.dtype, tuple[int, ...], int], ...]

    ALIGNMENT = 16

    def tensors(self) -> list[tuple[str, torch.Tensor]]:
        """The `(name, tensor)` pairs, as views of the buffer (no copy): on the receiving side too, given a buffer
        of the same bytes (`FlatBucket(received, entries)`)."""
        return [(name, self.buffer[offset:offset + math.prod(shape) * dtype.itemsize].view(dtype).view(shape))
                for name, dtype, shape, offset in self.entries]


def flat_buckets(tensors: Iterable[tuple[str, torch.Tensor]], size: int) -> Iterator[FlatBucket]:
    """`buckets(tensors, size)`, each copied into one contiguous byte buffer of its own size on its device (each
    tensor copied once, whatever its strides; the buffer may exceed `size` by the alignment of its entries, and is
    a tensor's own size for one larger than `size`). Raises ValueError for a size under 1."""
    import torch

    for bucket in buckets(tensors, size):
        entries, offset = [], 0
        for name, tensor in bucket:
            entries.append((name, tensor.dtype, tuple(tensor.shape), offset))
            offset += -(-tensor.numel() * tensor.element_size() // FlatBucket.ALIGNMENT) * FlatBucket.ALIGNMENT
        flat = FlatBucket(torch.empty(offset, dtype=torch.uint8, device=bucket[0][1].device), tuple(entries))
        for (_, tensor), (_, view) in zip(bucket, flat.tensors()):
            view.copy_(tensor)
        yield flat


def hf_config(native_config: dict, format: str | None = None, layout: str | None = None, *,
              origin: str | Path | api.Origin | None = None) -> dict:
    """The HF config.json mapping for a native `config` mapping (with `base_model`). With `origin` (an HF folder, or
    the native folder weightport wrote at import) every key of its config.json comes back, in its layout."""
    spec, native, found = api.export_target(native_config, format, origin)
    if found is None:
        return api.export_config(spec, native, layout or spec.hf_layout)
    return api.export_config(spec, native, layout or found.hf_layout, original=found.hf_config)
