"""Weight rules and the walker that turns them, with a concrete native config, into resolved bindings.

A binding ties one native tensor to one or more HF tensors through ops with inverses (`weightport.core.ops`).
Leaf rules name tensors relative to their section; structural rules (`Section`, `Each`, `Switch`) nest
sections, repeat them over blocks or named entries, and dispatch on a sub-config's `type`; `Alternatives` names the
same native tensors in several HF layouts, and `Renamed` gives rules other HF name prefixes. A leaf takes part in a
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


@dataclass(frozen=True, slots=True)
class Tensor:
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


def Fuse(native: str, *hf: str, dim: int = 0, sizes: tuple | None = None, ops: tuple = ()) -> Tensor:
    """Concatenate several HF tensors into one native tensor:
    `Fuse("key_value.weight", "k_proj.weight", "v_proj.weight")`."""
    return Tensor(native, hf, ops, dim, sizes)


@dataclass(frozen=True, slots=True)
class Linear:
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


@dataclass(frozen=True, slots=True)
class Section:
    """Rules under a native and an HF prefix, reading the sub-config at `config` (default: the native prefix)."""

    native: str
    hf: str
    rules: tuple
    config: str | None = None


@dataclass(frozen=True, slots=True)
class Each:
    """Rules repeated for each `(placeholders, sub-config)` of `items(config)`; prefixes use the placeholders,
    e.g. native `decoder.{i}` and HF `model.layers.{i}`, or `mtp_norms.{j}` with `j = i + 1`."""

    native: str
    hf: str
    rules: tuple
    config: str
    items: Callable[[Any], list[tuple[dict, Any]]]


@dataclass(frozen=True, slots=True)
class Repeat:
    """Rules `count` times (a config path) over the same sub-config at `config`, for i in `start .. count-1`;
    prefixes may do index arithmetic: native `multi_token_prediction.heads.{i-1}` <-> HF `model.mtp_norms.{i}`."""

    native: str
    hf: str
    rules: tuple
    count: str
    config: str = ""
    start: int = 0


@dataclass(frozen=True, slots=True)
class Switch:
    """Rules chosen by a field (`on`, default `type`) of the sub-config at `config`:
    `options = {value: (hf prefix, rules)}`; the rules read the same sub-config."""

    native: str
    config: str
    options: Mapping[Any, tuple[str, tuple]]
    on: str = "type"


@dataclass(frozen=True, slots=True)
class Alternatives:
    """The same native tensors under `native` in several HF layouts: `options = {name: (hf prefix, rules)}`, in order
    of preference; the rules read the sub-config at `native`, as in a `Section`. An export writes the first option;
    an import reads the first option whose HF tensors the source holds, or in memory, the option of the first of its
    tensors that arrives. Example: Mixtral's per-expert `block_sparse_moe.experts.{e}.w1.weight` and transformers 5's
    stacked `mlp.experts.gate_up_proj`. At the top of a table (`native=""`) with `Renamed` rules, a whole model's
    namings (Llava's). A tensor every option binds alike belongs to none of them; options may not otherwise share an
    HF name."""

    native: str
    options: Mapping[str, tuple[str, tuple]]


@dataclass(frozen=True, slots=True)
class Renamed:
    """`rules` with other HF names: a name (relative to the enclosing HF prefix) that is a key of `prefixes` or starts
    with one and a dot starts with its value instead (the first key that matches); other names stay. A whole model's
    other naming, as one option of an `Alternatives`: transformers 5 names a Llava model's tensors by its modules
    (`model.language_model.layers.0...`, `lm_head.weight`) where `save_pretrained` writes
    `language_model.model.layers.0...` and `language_model.lm_head.weight`, and its conversion mapping for `llava` is
    these prefix renames."""

    rules: tuple
    prefixes: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Binding:
    """A resolved leaf: native name, HF names, ops and the native part sizes along `dim`; `tied` is the full native
    name of the tensor this one is when the native model has none of its own, `alternative` the `(native path,
    option name)` of the `Alternatives` option it belongs to (None where every option binds the tensor alike)."""

    native: str
    hf: tuple[str, ...]
    ops: tuple[Op, ...]
    dim: int
    sizes: tuple[int, ...] | None
    tied: str | None = None
    alternative: tuple[str, str] | None = None


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


def walk(rules: tuple, config: Any, native: str = "", hf: str = "") -> list[Binding]:
    """Every binding of `rules` for a concrete (resolved) native config, with full names."""
    out: list[Binding] = []
    for rule in rules:
        if isinstance(rule, tuple):
            out += walk(rule, config, native, hf)
        elif isinstance(rule, Linear):
            out += walk(rule.tensors(), config, native, hf)
        elif isinstance(rule, Tensor):
            name = _join(native, rule.native)
            hf_names = tuple(_join(hf, h) for h in ((rule.hf,) if isinstance(rule.hf, str) else rule.hf))
            if rule.experts is not None:
                count = _resolve(config, rule.experts, name)
                hf_names = tuple(h.replace("{expert}", str(e)) for e in range(count) for h in hf_names)
            ops = tuple(
                replace(op, sizes=tuple(_resolve(config, s, name) for s in op.sizes)) if isinstance(op, Flatten)
                else op
                for op in rule.ops
            )
            sizes = None if rule.sizes is None else tuple(_resolve(config, s, name) for s in rule.sizes)
            tied = None if rule.tied is None else _join(native, rule.tied)
            out.append(Binding(name, hf_names, ops, rule.dim, sizes, tied))
        elif isinstance(rule, Section):
            sub = get(config, split(rule.native if rule.config is None else rule.config))
            if sub is not None and sub is not MISSING:
                out += walk(rule.rules, sub, _join(native, rule.native), _join(hf, rule.hf))
        elif isinstance(rule, Each):
            for values, sub in rule.items(get(config, split(rule.config))):
                out += walk(rule.rules, sub, _join(native, _format(rule.native, values)),
                            _join(hf, _format(rule.hf, values)))
        elif isinstance(rule, Repeat):
            sub = get(config, split(rule.config))
            for i in range(rule.start, _resolve(config, rule.count, rule.native)):
                out += walk(rule.rules, sub, _join(native, _format(rule.native, {"i": i})),
                            _join(hf, _format(rule.hf, {"i": i})))
        elif isinstance(rule, Switch):
            sub = get(config, split(rule.config))
            kind = sub.get(rule.on) if isinstance(sub, dict) else None
            if kind not in rule.options:
                raise ConfigError(
                    f"{_join(native, rule.config) or 'config'} has {rule.on} {kind!r}, which this format cannot hold "
                    f"(supported: {', '.join(map(str, rule.options))})")
            prefix, sub_rules = rule.options[kind]
            out += walk(sub_rules, sub, _join(native, rule.native), _join(hf, prefix))
        elif isinstance(rule, Renamed):
            out += [replace(b, hf=tuple(_join(hf, _rename(h, rule.prefixes)) for h in b.hf))
                    for b in walk(rule.rules, config, native, "")]
        elif isinstance(rule, Alternatives):
            out += _alternatives(rule, config, native, hf)
        else:
            raise SpecError(f"{rule!r} is not a weight rule")
    return out


def _alternatives(rule: Alternatives, config: Any, native: str, hf: str) -> list[Binding]:
    """The bindings of every option, tagged with `(site, option)`; a binding every option has alike (a tensor the
    layouts name the same) is kept once, untagged, where the first option has it. Raises SpecError for Alternatives
    inside Alternatives and for an HF name two options bind differently (a source could not tell them apart)."""
    site = _join(native, rule.native)
    options = {option: walk((Section(rule.native, prefix, sub_rules),), config, native, hf)
               for option, (prefix, sub_rules) in rule.options.items()}
    for bindings in options.values():
        inner = next((b.alternative[0] for b in bindings if b.alternative is not None), None)
        if inner is not None:
            raise SpecError(f"weight rule {site or '<root>'}: Alternatives inside Alternatives ({inner or '<root>'})")
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
