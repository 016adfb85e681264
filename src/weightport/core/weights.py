"""Weight rules and the walker that turns them, with a concrete native config, into resolved bindings.

A binding ties one native tensor to one or more HF tensors through ops with inverses (`weightport.core.ops`).
Leaf rules name tensors relative to their section; structural rules (`Section`, `Each`, `Switch`) nest
sections, repeat them over blocks or named entries, and dispatch on a sub-config's `type`; `Alternatives` names the
same native tensors in several HF layouts, and `Renamed` gives rules other HF name prefixes; `Carry` names a part of
the HF model that the native model lacks, whose tensors go along unchanged. A leaf takes part in a
plan only if its native tensor exists in the native model (biases, tied output weights, optional norms), so family
tables need no conditions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import re
from dataclasses import dataclass, replace
from typing import Any

from weightport.core.ops import Flatten, Op
from weightport.core.paths import MISSING, get, split
from weightport.errors import ConfigError, SpecError


class Rule:
    """A weight rule: `bindings(config, native prefix, HF prefix)` resolves it, for a concrete native (sub-)config,
    into bindings with full names."""

    __slots__ = ()

    def bindings(self, config: Any, native: str, hf: str) -> list[Binding]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Tensor(Rule):
    """One native tensor from one or more HF tensors: each HF part goes through `ops`, then the parts are
    concatenated along `dim` (equal parts, or `sizes` along `dim` in native layout). HF names holding `{expert}`
    repeat for each of the `experts` (a config path), expert-major: `[e0.w1, e0.w3, e1.w1, ...]`.

    `tied` names (relative to the same native prefix) the native tensor this one is when the native model has none
    of its own: tied output weights are the embedding. An HF checkpoint may still hold this rule's HF tensor then
    (transformers loads it and ignores it); a plan checks it bit-equal to the HF tensor of `tied` and drops it."""

    native: str
    hf: str | tuple[str, ...]
    ops: tuple[Op, ...] = ()
    dim: int = 0
    sizes: tuple[Any, ...] | None = None
    experts: str | None = None
    tied: str | None = None

    def bindings(self, config: Any, native: str, hf: str) -> list[Binding]:
        name = _join(native, self.native)
        hf_names = tuple(_join(hf, h) for h in ((self.hf,) if isinstance(self.hf, str) else self.hf))
        if self.experts is not None:
            count = _resolve(config, self.experts, name)
            hf_names = tuple(h.replace("{expert}", str(e)) for e in range(count) for h in hf_names)
        ops = tuple(replace(op, sizes=tuple(_resolve(config, s, name) for s in op.sizes)) if isinstance(op, Flatten)
                    else op for op in self.ops)
        sizes = None if self.sizes is None else tuple(_resolve(config, s, name) for s in self.sizes)
        tied = None if self.tied is None else _join(native, self.tied)
        return [Binding(name, hf_names, ops, self.dim, sizes, tied)]


def Fuse(native: str, *hf: str, dim: int = 0, sizes: tuple | None = None, ops: tuple = ()) -> Tensor:
    """Concatenate several HF tensors into one native tensor:
    `Fuse("key_value.weight", "k_proj.weight", "v_proj.weight")`."""
    return Tensor(native, hf, ops, dim, sizes)


@dataclass(frozen=True, slots=True)
class Carry(Rule):
    """Every HF tensor under the prefix `hf` that no other rule reads goes along unchanged, bit for bit: a part of the
    HF model the native model lacks (a vision tower, a projector: `Carry("model.vision_tower")`). Natively the tensors
    are kept beside the native model, under the names an export writes (this rule's HF names in the first option of
    an `Alternatives`), where Fast-LLM does not read them; an export puts them back. The prefix may hold no tensor."""

    hf: str

    def bindings(self, config: Any, native: str, hf: str) -> list[Binding]:
        name = _join(hf, self.hf)
        return [Binding(name, (name,), (), 0, None, carried=True)]


@dataclass(frozen=True, slots=True)
class Linear(Rule):
    """A linear layer's `.weight` and `.bias` (several HF layers are fused; ops apply to the weight only)."""

    native: str
    hf: tuple[str, ...]
    ops: tuple[Op, ...] = ()
    experts: str | None = None

    def __init__(self, native: str, *hf: str, ops: tuple = (), experts: str | None = None) -> None:
        for name, value in (("native", native), ("hf", hf), ("ops", ops), ("experts", experts)):
            object.__setattr__(self, name, value)

    def tensors(self) -> tuple[Tensor, Tensor]:
        weight = Tensor(f"{self.native}.weight", tuple(f"{h}.weight" for h in self.hf), self.ops, experts=self.experts)
        return weight, Tensor(f"{self.native}.bias", tuple(f"{h}.bias" for h in self.hf), experts=self.experts)

    def bindings(self, config: Any, native: str, hf: str) -> list[Binding]:
        return walk(self.tensors(), config, native, hf)


@dataclass(frozen=True, slots=True)
class Section(Rule):
    """Rules under a native and an HF prefix, reading the sub-config at `config` (default: the native prefix)."""

    native: str
    hf: str
    rules: tuple
    config: str | None = None

    def bindings(self, config: Any, native: str, hf: str) -> list[Binding]:
        sub = get(config, split(self.native if self.config is None else self.config))
        if sub is None or sub is MISSING:
            return []
        return walk(self.rules, sub, _join(native, self.native), _join(hf, self.hf))


@dataclass(frozen=True, slots=True)
class Each(Rule):
    """Rules repeated for each `(placeholders, sub-config)` of `items(config)`; prefixes use the placeholders,
    e.g. native `decoder.{i}` and HF `model.layers.{i}`, or `mtp_norms.{j}` with `j = i + 1`."""

    native: str
    hf: str
    rules: tuple
    config: str
    items: Callable[[Any], list[tuple[dict, Any]]]

    def bindings(self, config: Any, native: str, hf: str) -> list[Binding]:
        return [b for values, sub in self.items(get(config, split(self.config)))
                for b in walk(self.rules, sub, _join(native, _format(self.native, values)),
                              _join(hf, _format(self.hf, values)))]


@dataclass(frozen=True, slots=True)
class Repeat(Rule):
    """Rules `count` times (a config path) over the same sub-config at `config`, for i in `start .. count-1`;
    prefixes may do index arithmetic: native `multi_token_prediction.heads.{i-1}` <-> HF `model.mtp_norms.{i}`."""

    native: str
    hf: str
    rules: tuple
    count: str
    config: str = ""
    start: int = 0

    def bindings(self, config: Any, native: str, hf: str) -> list[Binding]:
        sub = get(config, split(self.config))
        return [b for i in range(self.start, _resolve(config, self.count, self.native))
                for b in walk(self.rules, sub, _join(native, _format(self.native, {"i": i})),
                              _join(hf, _format(self.hf, {"i": i})))]


@dataclass(frozen=True, slots=True)
class Switch(Rule):
    """Rules chosen by a field (`on`, default `type`) of the sub-config at `config`:
    `options = {value: (hf prefix, rules)}`; the rules read the same sub-config."""

    native: str
    config: str
    options: Mapping[Any, tuple[str, tuple]]
    on: str = "type"

    def bindings(self, config: Any, native: str, hf: str) -> list[Binding]:
        sub = get(config, split(self.config))
        kind = sub.get(self.on) if isinstance(sub, dict) else None
        if kind not in self.options:
            raise ConfigError(
                f"{_join(native, self.config) or 'config'} has {self.on} {kind!r}, which this format cannot hold "
                f"(supported: {', '.join(map(str, self.options))})")
        prefix, rules = self.options[kind]
        return walk(rules, sub, _join(native, self.native), _join(hf, prefix))


@dataclass(frozen=True, slots=True)
class Alternatives(Rule):
    """The same native tensors under `native` in several HF layouts: `options = {name: (hf prefix, rules)}`, in order
    of preference; the rules read the sub-config at `native`, as in a `Section`. An export writes the first option;
    an import reads the first option whose HF tensors the source holds, or in memory, the option of the first of its
    tensors that arrives. Example: Mixtral's per-expert `block_sparse_moe.experts.{e}.w1.weight` and transformers 5's
    stacked `mlp.experts.gate_up_proj`. At the top of a table (`native=""`) with `Renamed` rules, a whole model's
    namings (Llava's). A tensor every option binds alike belongs to none of them; options may not otherwise share an
    HF name."""

    native: str
    options: Mapping[str, tuple[str, tuple]]

    def bindings(self, config: Any, native: str, hf: str) -> list[Binding]:
        """The bindings of every option, tagged with `(site, option)`; a binding every option has alike (a tensor
        the layouts name the same) is kept once, untagged, where the first option has it. Raises SpecError for
        Alternatives inside Alternatives and for an HF name two options bind differently (a source could not tell
        them apart)."""
        site = _join(native, self.native)
        options = {option: walk((Section(self.native, prefix, rules),), config, native, hf)
                   for option, (prefix, rules) in self.options.items()}
        for bindings in options.values():
            inner = next((b.alternative[0] for b in bindings if b.alternative is not None), None)
            if inner is not None:
                raise SpecError(f"weight rule {site or '<root>'}: Alternatives inside Alternatives "
                                f"({inner or '<root>'})")
        common = set.intersection(*(set(bindings) for bindings in options.values()))
        out: list[Binding] = []
        owner = {name: "every layout" for b in common for name in b.hf}
        for i, (option, bindings) in enumerate(options.items()):
            for b in bindings:
                if b in common:
                    out += [b] if i == 0 else []
                    continue
                for name in b.hf:
                    if owner.setdefault(name, option) != option:
                        raise SpecError(f"weight rule {site or '<root>'}: HF tensor {name} is bound differently in "
                                        f"{owner[name]!r} and {option!r}")
                out.append(replace(b, alternative=(site, option)))
        return out


@dataclass(frozen=True, slots=True)
class Renamed(Rule):
    """`rules` with other HF names: a name (relative to the enclosing HF prefix) that is a key of `prefixes` or starts
    with one and a dot starts with its value instead (the first key that matches); other names stay. A whole model's
    other naming, as one option of an `Alternatives`: transformers 5 names a Llava model's tensors by its modules
    (`model.language_model.layers.0...`, `lm_head.weight`) where `save_pretrained` writes
    `language_model.model.layers.0...` and `language_model.lm_head.weight`, and its conversion mapping for `llava` is
    these prefix renames."""

    rules: tuple
    prefixes: Mapping[str, str]

    def bindings(self, config: Any, native: str, hf: str) -> list[Binding]:
        return [replace(b, hf=tuple(_join(hf, _rename(h, self.prefixes)) for h in b.hf),
                        native=_join(hf, b.native) if b.carried else b.native)
                for b in walk(self.rules, config, native, "")]


@dataclass(frozen=True, slots=True)
class Binding:
    """A resolved leaf: native name, HF names, ops and the native part sizes along `dim`; `tied` is the full native
    name of the tensor this one is when the native model has none of its own, `alternative` the `(native path,
    option name)` of the `Alternatives` option it belongs to (None where every option binds the tensor alike). A
    `carried` binding (`Carry`) names an HF prefix in `hf` and, in `native`, the prefix its tensors are kept under
    natively (the one an export writes)."""

    native: str
    hf: tuple[str, ...]
    ops: tuple[Op, ...]
    dim: int
    sizes: tuple[int, ...] | None
    tied: str | None = None
    alternative: tuple[str, str] | None = None
    carried: bool = False


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _format(template: str, values: dict[str, int | str]) -> str:
    """`"layers.{i+1}"` with i = 2 -> `"layers.3"`: placeholders with optional integer offsets."""
    def one(match: re.Match) -> str:
        value = values[match.group(1)]
        return str(value + int(match.group(2)) if match.group(2) else value)

    return re.sub(r"\{(\w+)([+-]\d+)?\}", one, template)


def _rename(name: str, prefixes: Mapping[str, str]) -> str:
    for old, new in prefixes.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old) :]
    return name


def _resolve(config: Any, value: Any, where: str) -> Any:
    if not isinstance(value, str):
        return value
    found = get(config, split(value))
    if found is MISSING:
        raise SpecError(f"weight rule {where}: config path {value!r} does not exist in {list(config)}")
    return found


def carried_parts(rules: tuple, hf: str = "") -> list[str]:
    """The HF prefixes of the `Carry` rules of a table, as an export writes them (first option of an `Alternatives`),
    without a config: for listing what a format carries."""
    out: list[str] = []
    for rule in rules:
        if isinstance(rule, tuple):
            out += carried_parts(rule, hf)
        elif isinstance(rule, Carry):
            out.append(_join(hf, rule.hf))
        elif isinstance(rule, Alternatives):
            prefix, inner = next(iter(rule.options.values()))
            out += carried_parts(inner, _join(hf, prefix))
        elif isinstance(rule, Switch):
            for prefix, inner in rule.options.values():
                out += carried_parts(inner, _join(hf, prefix))
        elif isinstance(getattr(rule, "rules", None), tuple):
            out += carried_parts(rule.rules, _join(hf, getattr(rule, "hf", "") or ""))
    return list(dict.fromkeys(out))


def walk(rules: tuple, config: Any, native: str = "", hf: str = "") -> list[Binding]:
    """Every binding of `rules` for a concrete (resolved) native config, with full names. Each rule resolves its own
    bindings (`bindings(config, native prefix, HF prefix)`), so a new kind of weight rule is one class."""
    out: list[Binding] = []
    for rule in rules:
        if isinstance(rule, tuple):
            out += walk(rule, config, native, hf)
        elif isinstance(rule, Rule):
            out += rule.bindings(config, native, hf)
        else:
            raise SpecError(f"{rule!r} is not a weight rule")
    return out
