"""Config rules: one declaration per native field or HF key that converts in both directions.

A family's config table is a tuple of rules. `from_hf` runs every rule against an HF `config.json` dict and builds
the explicit native config; `to_hf` runs them against a resolved native config and builds the HF dict. Both
directions record what each rule claimed, so coverage is checked on every run: an HF key no rule claims is an
error (unless the HF config class does not define it: then it cannot change the model, and it is only reported), and
so is a native architecture field no rule claims. Rules are frozen values; all run state lives in `_Run`.
Paths in a rule are relative to the section it sits in (`Nested`, `Choice`, `Entries`, `Layout`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from weightport.core.paths import MISSING, Path, dotted, get, join, leaves, put
from weightport.errors import ConfigError, SpecError, report


@dataclass(frozen=True, slots=True)
class Rename:
    """The same value under two names. `values` maps HF spellings to native ones (the first HF spelling of each
    native value is the one written); `default` (a value, or a function of the HF section) fills an absent, null
    or `"auto"` HF key; a native value equal to `omit` is not written to HF; an imported value equal to `unset` is
    left unset natively (it must be the schema default; this is where Fast-LLM's importer leaves it unset); a null
    native value is written as the native value at `none_from` (an effective setting, e.g. a layer bias that
    follows `add_linear_biases`)."""

    native: str
    hf: str
    values: Mapping[Any, Any] | None = None
    default: Any = MISSING
    omit: Any = MISSING
    unset: Any = MISSING
    none_from: str | None = None


@dataclass(frozen=True, slots=True)
class Constant:
    """A value fixed on one side: a native field set on import and checked on export (an inert field, absent
    from resolved configs, is only set), or an HF key written on export and checked (if present) on import, where
    the values in `also` are accepted too. With `write=False` the value is only checked: a native field is left
    unset on import (it must then be the schema default, as where Fast-LLM's importer leaves it unset), an HF key
    is not written on export. A null native value is checked as the native value at `none_from` (an effective
    setting, e.g. a layer bias that follows `add_linear_biases`)."""

    value: Any
    native: str | None = None
    hf: str | None = None
    reason: str = ""
    write: bool = True
    also: tuple = ()  # other HF values accepted on import
    none_from: str | None = None


@dataclass(frozen=True, slots=True)
class AnyOf:
    """A native switch that is on when any of several HF keys is true (transformers' Llava family ties the embeddings
    when the top-level `tie_word_embeddings` or the text model's is true). On export every key gets the native value.
    """

    native: str
    hf: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Derived:
    """A native field (and its subtree) computed from the HF section on import. On export its value is written
    to `hf` when given; either way the round-trip check verifies it."""

    native: str
    from_hf: Callable[[dict], Any]
    reason: str
    hf: str | None = None


@dataclass(frozen=True, slots=True)
class Computed:
    """An HF key that is a function of other HF keys (the function gets the whole HF config): written on export
    after the other rules of its table, checked on import when present."""

    hf: str
    from_hf: Callable[[dict], Any]
    reason: str


@dataclass(frozen=True, slots=True)
class Ignore:
    """A key (HF) or subtree (native) deliberately not converted; `reason` is mandatory. Ignored HF keys are kept in
    the native checkpoint's metadata and restored on export."""

    reason: str
    hf: str | None = None
    native: str | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    """Dispatch on a type: native `<native>.type` selects an option, whose HF name is written to `<hf>.<key>`;
    on import the HF name (or `default` when absent) selects it. Each option is `(HF name, rules)`; the HF name
    may be a tuple of accepted spellings, the first one written. With `stored=False` the native side keeps no
    type (the HF name only selects rules, e.g. a Llava text model's `model_type`); export then takes the first
    option whose native constants the config has."""

    native: str
    hf: str
    options: Mapping[str, tuple[Any, tuple]]
    key: str = "type"
    default: Any = None
    stored: bool = True


@dataclass(frozen=True, slots=True)
class Nested:
    """Rules of a sub-section, rooted at `native` and `hf` (either may be empty). An `optional` section is
    skipped on import when its HF dict is absent, and on export when its native config is None."""

    native: str
    hf: str
    rules: tuple
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Entries:
    """The same rules for every entry of a dict of sub-configs (pattern blocks, stochastic sub-mixers)."""

    native: str
    hf: str
    rules: tuple


@dataclass(frozen=True, slots=True)
class Layout:
    """A per-layer list of block names in HF (`hybrid_block_layout`, `layer_types`) <-> a native block sequence.

    On import each distinct name's block is converted by `blocks[name]`, all reading the same HF section, into a
    `pattern` sequence whose pattern is the list as it is (as Fast-LLM's importers write it; a shorter list, as
    Fast-LLM's own exports write, repeats over the layers); with `single_is_fixed`, a list of one name is a `fixed`
    sequence with its type left at the default (Fast-LLM's Apriel importer). On export each position is named by its
    native block name when that is a key of `blocks`, else by the first entry whose native constants the block
    has, and the list has one name per layer."""

    native: str
    hf: str
    blocks: Mapping[str, tuple]
    positions: Callable[[dict], list[tuple[str, dict]]]  # (native block name, block config) per position
    single_is_fixed: bool = False


def _names(spelled: Any) -> tuple:
    return spelled if isinstance(spelled, tuple) else (spelled,)


@dataclass
class _Run:
    family: str
    problems: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # keys of the HF config class that no rule converts
    missing: bool = False
    hf_claims: set[Path] = field(default_factory=set)
    native_claims: set[Path] = field(default_factory=set)
    native_subtrees: set[Path] = field(default_factory=set)


def from_hf(rules: tuple, hf: dict, family: str, metadata_keys: frozenset[str],
            undefined: tuple[Path, ...] = ()) -> tuple[dict, list[Path]]:
    """The explicit native config for an HF config dict, and the `undefined` keys (keys the HF config class does
    not define, which cannot change the model) that no rule read: they are accepted as they are.

    Raises ConfigError listing every unknown, missing, unsupported or inconsistent key at once.
    """
    run = _Run(family)
    native: dict = {}
    _import(rules, hf, native, (), (), run)
    kept: list[Path] = []
    for path, value in leaves(hf).items():
        if not path or any(key in metadata_keys for key in path[:2]) or path[-1] in metadata_keys:
            continue
        claimed = any(path[: len(c)] == c for c in run.hf_claims)
        if value is None or value == {}:  # a null or empty section is absent: claimed if a rule reads inside it
            claimed = claimed or any(c[: len(path)] == path for c in run.hf_claims)
        if claimed:
            continue
        outside = next((u for u in undefined if path[: len(u)] == u), None)
        if outside is not None:
            kept += [outside] if outside not in kept else []
        else:
            run.unknown.append(f"unknown key {dotted(path)!r} (value {value!r})")
    if run.problems or run.unknown:
        hints = []
        if run.unknown:
            hints.append("the HF config class of this format defines these keys and no rule converts them, so they "
                         "may change the model: check --format, or report the key")
        if run.missing:
            hints.append("add the missing keys to config.json: the config class of this format gives them no default")
        raise ConfigError(report(f"{family}: config.json cannot be imported", run.problems + run.unknown,
                                 "; ".join(hints) or None))
    return native, kept


def to_hf(rules: tuple, native: dict, family: str) -> dict:
    """The HF config dict for a resolved native config; every native architecture field must be claimed."""
    run = _Run(family)
    hf: dict = {}
    _export(rules, native, hf, (), (), run)
    for path, value in leaves(native).items():
        if value == {}:
            continue
        claimed = path in run.native_claims or any(path[: len(s)] == s for s in run.native_subtrees)
        if path and not claimed:
            run.problems.append(f"native field {dotted(path)} = {get(native, path)!r} has no rule in {family}")
    if run.problems:
        raise ConfigError(report(f"{family}: the native config cannot be exported", run.problems))
    return hf


def _constants(rules: tuple, prefix: Path = ()) -> dict[Path, Any]:
    """The native constants of a rule table (through nested sections), by path."""
    out: dict[Path, Any] = {}
    for rule in rules:
        if isinstance(rule, Constant) and rule.native is not None:
            out[join(prefix, rule.native)] = rule.value
        elif isinstance(rule, Nested):
            out.update(_constants(rule.rules, join(prefix, rule.native)))
    return out


def _import(rules: tuple, hf: dict, native: dict, n: Path, h: Path, run: _Run) -> None:
    section = get(hf, h, {})
    for rule in rules:
        if isinstance(rule, Rename):
            path = join(h, rule.hf)
            run.hf_claims.add(path)
            value = get(hf, path)
            if value is MISSING or (value in (None, "auto") and rule.default is not MISSING):
                if rule.default is MISSING:
                    run.problems.append(f"missing key {dotted(path)!r}")
                    run.missing = True
                    continue
                try:
                    value = rule.default(section) if callable(rule.default) else rule.default
                except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
                    run.problems.append(f"missing key {dotted(path)!r}, and no default could be derived: {err!r}")
                    continue
            elif rule.values is not None:
                if value not in rule.values:
                    run.problems.append(
                        f"{dotted(path)} = {value!r} is not supported (supported: {', '.join(map(str, rule.values))})")
                    continue
                value = rule.values[value]
            if rule.unset is MISSING or value != rule.unset:
                _set(native, join(n, rule.native), value, path, run)
        elif isinstance(rule, Constant):
            if rule.native is not None:
                if rule.write:
                    put(native, join(n, rule.native), rule.value)
            else:
                path = join(h, rule.hf)
                run.hf_claims.add(path)
                value = get(hf, path)
                if value is not MISSING and value != rule.value and value not in rule.also:
                    run.problems.append(f"{dotted(path)} = {value!r}, but {run.family} requires {rule.value!r}"
                                        + (f" ({rule.reason})" if rule.reason else ""))
        elif isinstance(rule, AnyOf):
            paths = [join(h, key) for key in rule.hf]
            run.hf_claims.update(paths)
            values = {dotted(p): get(hf, p) for p in paths if get(hf, p, None) is not None}
            wrong = {k: v for k, v in values.items() if not isinstance(v, bool)}
            if wrong or not values:
                keys = " or ".join(map(dotted, paths))
                run.problems.append(f"{keys} should be true or false, got {wrong or 'none'}")
                continue
            _set(native, join(n, rule.native), any(values.values()), paths[0], run)
        elif isinstance(rule, Derived):
            if rule.hf is not None:
                run.hf_claims.add(join(h, rule.hf))
            try:
                put(native, join(n, rule.native), rule.from_hf(section))
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
                run.problems.append(f"cannot derive {dotted(join(n, rule.native))} ({rule.reason}): {err!r}")
        elif isinstance(rule, Computed):
            path = join(h, rule.hf)
            run.hf_claims.add(path)
            value = get(hf, path)
            if value is not MISSING:
                try:
                    expected = rule.from_hf(hf)
                except (KeyError, TypeError, ValueError) as err:
                    expected = f"<cannot compute: {err!r}>"
                if value != expected:
                    run.problems.append(f"{dotted(path)} = {value!r}, but the rest of the config implies {expected!r}")
        elif isinstance(rule, Ignore):
            if rule.hf is not None:
                run.hf_claims.add(join(h, rule.hf))
        elif isinstance(rule, Choice):
            path = join(h, rule.hf, rule.key)
            run.hf_claims.add(path)
            name = get(hf, path, None)
            name = rule.default if name is None else name
            if isinstance(name, (list, dict)):
                run.problems.append(f"{dotted(path)} = {name!r} is not a type name")
                continue
            match = [t for t, (spelled, _) in rule.options.items() if name in _names(spelled)]
            if not match:
                supported = ", ".join(str(s) for spelled, _ in rule.options.values() for s in _names(spelled))
                run.problems.append(f"{dotted(path)} = {name!r} is not supported (supported: {supported})")
                if rule.hf:  # the rest of the section belongs to the unsupported type: one problem says it
                    run.hf_claims.add(join(h, rule.hf))
                continue
            if rule.stored:
                put(native, join(n, rule.native, "type"), match[0])
            _import(rule.options[match[0]][1], hf, native, join(n, rule.native), join(h, rule.hf), run)
        elif isinstance(rule, Nested):
            if rule.optional and get(hf, join(h, rule.hf), None) is None:
                run.hf_claims.add(join(h, rule.hf))
                continue
            _import(rule.rules, hf, native, join(n, rule.native), join(h, rule.hf), run)
        elif isinstance(rule, Entries):
            path = join(h, rule.hf)
            run.hf_claims.add(path + ("*",))
            entries = get(hf, path, {})
            if not isinstance(entries, dict):
                run.problems.append(f"{dotted(path)} should be a mapping of named entries, got {entries!r}")
                continue
            put(native, join(n, rule.native), {})
            for name in entries:
                _import(rule.rules, hf, native, join(n, rule.native, name), path + (name,), run)
        elif isinstance(rule, Layout):
            path = join(h, rule.hf)
            run.hf_claims.add(path)
            names = get(hf, path)
            if not isinstance(names, list) or not names or not all(isinstance(x, str) for x in names):
                run.problems.append(f"{dotted(path)} should be a non-empty list of block names, got {names!r}")
                continue
            unknown = sorted(set(names) - set(rule.blocks))
            if unknown:
                run.problems.append(f"{dotted(path)} names {unknown}, which {run.family} cannot convert "
                                    f"(supported: {', '.join(rule.blocks)})")
                continue
            base = join(n, rule.native)
            if len(names) == 1 and rule.single_is_fixed:
                _import(rule.blocks[names[0]], hf, native, base + ("block",), h, run)
            else:
                put(native, base + ("type",), "pattern")
                put(native, base + ("pattern",), list(names))
                for name in dict.fromkeys(names):
                    _import(rule.blocks[name], hf, native, base + ("blocks", name), h, run)
        else:
            raise SpecError(f"{run.family}: {rule!r} is not a config rule")


def _set(native: dict, path: Path, value: Any, source: Path, run: _Run) -> None:
    current = get(native, path)
    if current is not MISSING and current != value:
        run.problems.append(f"{dotted(source)} = {value!r} disagrees with another key that sets {dotted(path)} to "
                            f"{current!r}")
    put(native, path, value)


def _write(hf: dict, path: Path, value: Any, source: Path, run: _Run) -> None:
    current = get(hf, path)
    if current is not MISSING and current != value:
        run.problems.append(f"{dotted(path)} would be both {current!r} and {value!r} (from {dotted(source)})")
    put(hf, path, value)


def _export(rules: tuple, native: dict, hf: dict, n: Path, h: Path, run: _Run) -> None:
    for rule in rules:
        if isinstance(rule, Rename):
            path = join(n, rule.native)
            run.native_claims.add(path)
            value = get(native, path)
            if value is None and rule.none_from is not None:
                value = get(native, join(n, rule.none_from))
            if rule.omit is not MISSING and value == rule.omit:
                continue
            if rule.values is not None:
                spelled = [k for k, v in rule.values.items() if v == value]
                if not spelled:
                    run.problems.append(f"{dotted(path)} = {value!r} has no HF spelling in {run.family}")
                    continue
                value = spelled[0]
            _write(hf, join(h, rule.hf), value, path, run)
        elif isinstance(rule, Constant):
            if rule.native is not None:
                path = join(n, rule.native)
                run.native_claims.add(path)
                run.native_subtrees.add(path)
                value = get(native, path)
                shown = repr(value)
                if value is None and rule.none_from is not None:
                    value = get(native, join(n, rule.none_from))
                    shown = f"None (so {value!r}, from {rule.none_from})"
                if value != rule.value and value is not MISSING:
                    run.problems.append(f"{dotted(path)} = {shown} cannot be represented: {run.family} requires "
                                        f"{rule.value!r}" + (f" ({rule.reason})" if rule.reason else ""))
            elif rule.write:
                _write(hf, join(h, rule.hf), rule.value, (), run)
        elif isinstance(rule, AnyOf):
            path = join(n, rule.native)
            run.native_claims.add(path)
            for key in rule.hf:
                _write(hf, join(h, key), get(native, path), path, run)
        elif isinstance(rule, Derived):
            run.native_subtrees.add(join(n, rule.native))
            if rule.hf is not None:
                _write(hf, join(h, rule.hf), get(native, join(n, rule.native)), join(n, rule.native), run)
        elif isinstance(rule, Ignore):
            if rule.native is not None:
                run.native_subtrees.add(join(n, rule.native))
        elif isinstance(rule, Choice):
            base = join(n, rule.native)
            if rule.stored:
                run.native_claims.add(join(base, "type"))
                kind = get(native, join(base, "type"))
            else:
                misses = {k: [f"{dotted(join(base, p))} = {get(native, join(base, p))!r} (needs {v!r})"
                              for p, v in _constants(sub).items() if get(native, join(base, p)) != v]
                          for k, (_, sub) in rule.options.items()}
                kind = next((k for k, miss in misses.items() if not miss), None)
                if kind is None:
                    run.native_subtrees.add(base)
                    run.problems.append(f"no {dotted(join(h, rule.hf, rule.key))} of {run.family} fits: " + "; ".join(
                        f"{k} needs {miss[0]}" for k, miss in misses.items()))
                    continue
            if kind not in rule.options:
                run.native_subtrees.add(base)
                run.problems.append(
                    f"{dotted(join(base, 'type'))} = {kind!r} cannot be exported as {run.family} "
                    f"(supported: {', '.join(rule.options)})")
                continue
            spelled, sub_rules = rule.options[kind]
            _write(hf, join(h, rule.hf, rule.key), _names(spelled)[0], base, run)
            _export(sub_rules, native, hf, base, join(h, rule.hf), run)
        elif isinstance(rule, Nested):
            if rule.optional and get(native, join(n, rule.native), None) is None:
                run.native_claims.add(join(n, rule.native))
                continue
            _export(rule.rules, native, hf, join(n, rule.native), join(h, rule.hf), run)
        elif isinstance(rule, Entries):
            base = join(n, rule.native)
            entries = get(native, base, {})
            _write(hf, join(h, rule.hf), get(hf, join(h, rule.hf), {}), base, run)
            run.native_claims.add(base)
            for name in entries:
                _export(rule.rules, native, hf, base + (name,), join(h, rule.hf, name), run)
        elif isinstance(rule, Layout):
            _export_layout(rule, native, hf, n, h, run)
        elif not isinstance(rule, Computed):
            raise SpecError(f"{run.family}: {rule!r} is not a config rule")
    for rule in rules:  # computed keys last, from the section the other rules wrote
        if isinstance(rule, Computed):
            try:
                _write(hf, join(h, rule.hf), rule.from_hf(hf), (), run)
            except (KeyError, TypeError, ValueError) as err:
                run.problems.append(f"cannot compute {dotted(join(h, rule.hf))} ({rule.reason}): {err!r}")


def _export_layout(rule: Layout, native: dict, hf: dict, n: Path, h: Path, run: _Run) -> None:
    base = join(n, rule.native)
    sequence = get(native, base)
    run.native_claims.update({base + ("type",), base + ("pattern",)})
    fixed = sequence["type"] == "fixed"
    names, exported = [], {}
    for native_name, block in rule.positions(sequence):
        name = native_name if native_name in rule.blocks else next(
            (key for key, sub in rule.blocks.items()
             if all(get(block, p) == v for p, v in _constants(sub).items())), None)
        if name is None:
            run.problems.append(f"{dotted(base)}: block {native_name or 'block'!r} matches no layer kind of "
                                f"{run.family} (supported: {', '.join(rule.blocks)})")
            return
        names.append(name)
        exported[native_name] = name
    _write(hf, join(h, rule.hf), names, base, run)
    for native_name, name in exported.items():
        _export(rule.blocks[name], native, hf, base + (("block",) if fixed else ("blocks", native_name)), h, run)
    if not fixed:
        unused = set(sequence["blocks"]) - set(exported)
        run.native_subtrees.update(base + ("blocks", u) for u in unused)
