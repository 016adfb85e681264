"""Config rules: one declaration per native field or HF key that converts in both directions.

A family's config table is a tuple of rules. `from_hf` runs every rule against an HF `config.json` dict and builds
the explicit native config; `to_hf` runs them against a resolved native config and builds the HF dict. Both
directions record what each rule claimed, so coverage is checked on every run: an HF key no rule claims is an
error (unless the HF config class does not define it: then it cannot change the model, and it is only reported), and
so is a native architecture field no rule claims. Rules are frozen values; all run state lives in `_Run`.
Paths in a rule are relative to the section it sits in (`Nested`, `Choice`, `Entries`, `Layout`).

Each rule holds its two directions side by side, as a layout op does: `to_native` reads the HF section into the
native config, `to_hf` writes the native config into the HF section. The walkers only call them, so a new kind of
rule is one new class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from weightport.core.paths import MISSING, Path, dotted, get, join, leaves, put
from weightport.errors import ConfigError, SpecError, report, shown


@dataclass
class _Run:
    """The state of one walk: problems found, and what the rules claimed on each side."""

    family: str
    problems: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # keys of the HF config class that no rule converts
    missing: bool = False
    hf_claims: set[Path] = field(default_factory=set)
    native_claims: set[Path] = field(default_factory=set)
    native_subtrees: set[Path] = field(default_factory=set)
    sources: dict[Path, Path] = field(default_factory=dict)  # native field -> the HF key it was read from

    def set(self, native: dict, path: Path, value: Any, source: Path) -> None:
        """Set a native field; a second HF key setting it to another value is a problem."""
        self.sources[path] = source
        current = get(native, path)
        if current is not MISSING and current != value:
            self.problems.append(f"{dotted(source)} = {value!r} disagrees with another key that sets {dotted(path)} "
                                 f"to {current!r}")
        put(native, path, value)

    def write(self, hf: dict, path: Path, value: Any, source: Path) -> None:
        """Set an HF key; a second native field writing another value there is a problem."""
        current = get(hf, path)
        if current is not MISSING and current != value:
            self.problems.append(f"{dotted(path)} would be both {current!r} and {value!r} (from {dotted(source)})")
        put(hf, path, value)


class Rule:
    """A config rule: `to_native` and `to_hf` convert its part of a section (native path `n`, HF path `h`).
    `late` rules write HF after the other rules of their table (they read what those wrote)."""

    __slots__ = ()
    late = False

    def to_native(self, hf: dict, native: dict, n: Path, h: Path, run: _Run) -> None:
        raise NotImplementedError

    def to_hf(self, native: dict, hf: dict, n: Path, h: Path, run: _Run) -> None:
        raise NotImplementedError

    def native_constants(self, prefix: Path) -> dict[Path, Any]:
        """The native values this rule fixes, by path (through nested sections)."""
        return {}


@dataclass(frozen=True, slots=True)
class Rename(Rule):
    """The same value under two names. `values` maps HF spellings to native ones (the first HF spelling of each
    native value is the one written); `default` (a value, or a function of the HF section) fills an absent, null
    or `"auto"` HF key; a native value equal to `omit` (a value, or a function of the HF section as the rules before
    this one wrote it) is not written to HF; an imported value equal to `unset` is
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

    def to_native(self, hf: dict, native: dict, n: Path, h: Path, run: _Run) -> None:
        path = join(h, self.hf)
        run.hf_claims.add(path)
        value = get(hf, path)
        if value is MISSING or (value in (None, "auto") and self.default is not MISSING):
            if self.default is MISSING:
                run.problems.append(f"missing key {dotted(path)!r}")
                run.missing = True
                return
            try:
                value = self.default(get(hf, h, {})) if callable(self.default) else self.default
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
                run.problems.append(f"missing key {dotted(path)!r}, and no default could be derived: {err!r}")
                return
        elif self.values is not None:
            if not _in(value, self.values):
                run.problems.append(
                    f"{dotted(path)} = {shown(value)} is not supported (supported: "
                    f"{', '.join(map(str, self.values))})")
                return
            value = self.values[value]
        if self.unset is MISSING or value != self.unset:
            run.set(native, join(n, self.native), value, path)

    def to_hf(self, native: dict, hf: dict, n: Path, h: Path, run: _Run) -> None:
        path = join(n, self.native)
        run.native_claims.add(path)
        value = get(native, path)
        if value is None and self.none_from is not None:
            value = get(native, join(n, self.none_from))
        omit = self.omit(get(hf, h, {})) if callable(self.omit) else self.omit
        if omit is not MISSING and value == omit:
            return
        if self.values is not None:
            spelled = [k for k, v in self.values.items() if v == value]
            if not spelled:
                run.problems.append(f"{dotted(path)} = {value!r} has no HF spelling in {run.family}")
                return
            value = spelled[0]
        run.write(hf, join(h, self.hf), value, path)


@dataclass(frozen=True, slots=True)
class Constant(Rule):
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

    def _why(self) -> str:
        return f" ({self.reason})" if self.reason else ""

    def to_native(self, hf: dict, native: dict, n: Path, h: Path, run: _Run) -> None:
        if self.native is not None:
            if self.write:
                put(native, join(n, self.native), self.value)
            return
        path = join(h, self.hf)
        run.hf_claims.add(path)
        value = get(hf, path)
        if value is not MISSING and value != self.value and value not in self.also:
            run.problems.append(f"{dotted(path)} = {value!r}, but {run.family} requires {self.value!r}{self._why()}")

    def to_hf(self, native: dict, hf: dict, n: Path, h: Path, run: _Run) -> None:
        if self.native is None:
            if self.write:
                run.write(hf, join(h, self.hf), self.value, ())
            return
        path = join(n, self.native)
        run.native_claims.add(path)
        run.native_subtrees.add(path)
        value = get(native, path)
        shown = repr(value)
        if value is None and self.none_from is not None:
            value = get(native, join(n, self.none_from))
            shown = f"None (so {value!r}, from {self.none_from})"
        if value != self.value and value is not MISSING:
            run.problems.append(f"{dotted(path)} = {shown} cannot be represented: {run.family} requires "
                                f"{self.value!r}{self._why()}")

    def native_constants(self, prefix: Path) -> dict[Path, Any]:
        return {} if self.native is None else {join(prefix, self.native): self.value}


@dataclass(frozen=True, slots=True)
class AnyOf(Rule):
    """A native switch that is on when any of several HF keys is true (transformers' Llava family ties the embeddings
    when the top-level `tie_word_embeddings` or the text model's is true). On export every key gets the native value.
    """

    native: str
    hf: tuple[str, ...]

    def to_native(self, hf: dict, native: dict, n: Path, h: Path, run: _Run) -> None:
        paths = [join(h, key) for key in self.hf]
        run.hf_claims.update(paths)
        values = {dotted(p): get(hf, p) for p in paths if get(hf, p, None) is not None}
        wrong = {k: v for k, v in values.items() if not isinstance(v, bool)}
        if wrong or not values:
            run.problems.append(f"{' or '.join(map(dotted, paths))} should be true or false, got {wrong or 'none'}")
            return
        run.set(native, join(n, self.native), any(values.values()), paths[0])

    def to_hf(self, native: dict, hf: dict, n: Path, h: Path, run: _Run) -> None:
        path = join(n, self.native)
        run.native_claims.add(path)
        for key in self.hf:
            run.write(hf, join(h, key), get(native, path), path)


@dataclass(frozen=True, slots=True)
class Derived(Rule):
    """A native field (and its subtree) computed from the HF section on import. On export its value is written
    to `hf` when given; either way the round-trip check verifies it."""

    native: str
    from_hf: Callable[[dict], Any]
    reason: str
    hf: str | None = None

    def to_native(self, hf: dict, native: dict, n: Path, h: Path, run: _Run) -> None:
        if self.hf is not None:
            run.hf_claims.add(join(h, self.hf))
        try:
            put(native, join(n, self.native), self.from_hf(get(hf, h, {})))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
            run.problems.append(f"cannot derive {dotted(join(n, self.native))} ({self.reason}): {err!r}")

    def to_hf(self, native: dict, hf: dict, n: Path, h: Path, run: _Run) -> None:
        path = join(n, self.native)
        run.native_subtrees.add(path)
        if self.hf is not None:
            run.write(hf, join(h, self.hf), get(native, path), path)


@dataclass(frozen=True, slots=True)
class Computed(Rule):
    """An HF key that is a function of other HF keys (the function gets the whole HF config): written on export
    after the other rules of its table, checked on import when present."""

    hf: str
    from_hf: Callable[[dict], Any]
    reason: str
    late = True

    def to_native(self, hf: dict, native: dict, n: Path, h: Path, run: _Run) -> None:
        path = join(h, self.hf)
        run.hf_claims.add(path)
        value = get(hf, path)
        if value is MISSING:
            return
        try:
            expected = self.from_hf(hf)
        except (KeyError, TypeError, ValueError) as err:
            expected = f"<cannot compute: {err!r}>"
        if value != expected:
            run.problems.append(f"{dotted(path)} = {value!r}, but the rest of the config implies {expected!r}")

    def to_hf(self, native: dict, hf: dict, n: Path, h: Path, run: _Run) -> None:
        try:
            run.write(hf, join(h, self.hf), self.from_hf(hf), ())
        except (KeyError, TypeError, ValueError) as err:
            run.problems.append(f"cannot compute {dotted(join(h, self.hf))} ({self.reason}): {err!r}")


@dataclass(frozen=True, slots=True)
class Ignore(Rule):
    """A key (HF) or subtree (native) deliberately not converted; `reason` is mandatory. Ignored HF keys are kept in
    the native checkpoint's metadata and restored on export."""

    reason: str
    hf: str | None = None
    native: str | None = None

    def to_native(self, hf: dict, native: dict, n: Path, h: Path, run: _Run) -> None:
        if self.hf is not None:
            run.hf_claims.add(join(h, self.hf))

    def to_hf(self, native: dict, hf: dict, n: Path, h: Path, run: _Run) -> None:
        if self.native is not None:
            run.native_subtrees.add(join(n, self.native))


@dataclass(frozen=True, slots=True)
class Choice(Rule):
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

    def to_native(self, hf: dict, native: dict, n: Path, h: Path, run: _Run) -> None:
        path = join(h, self.hf, self.key)
        run.hf_claims.add(path)
        name = get(hf, path, None)
        name = self.default if name is None else name
        if isinstance(name, (list, dict)):
            run.problems.append(f"{dotted(path)} = {name!r} is not a type name")
            return
        match = [t for t, (spelled, _) in self.options.items() if name in _names(spelled)]
        if not match:
            supported = ", ".join(str(s) for spelled, _ in self.options.values() for s in _names(spelled))
            run.problems.append(f"{dotted(path)} = {name!r} is not supported (supported: {supported})")
            if self.hf:  # the rest of the section belongs to the unsupported type: one problem says it
                run.hf_claims.add(join(h, self.hf))
            return
        if self.stored:
            put(native, join(n, self.native, "type"), match[0])
        _import(self.options[match[0]][1], hf, native, join(n, self.native), join(h, self.hf), run)

    def to_hf(self, native: dict, hf: dict, n: Path, h: Path, run: _Run) -> None:
        base = join(n, self.native)
        if self.stored:
            run.native_claims.add(join(base, "type"))
            kind = get(native, join(base, "type"))
        else:
            misses = {k: [f"{dotted(join(base, p))} = {get(native, join(base, p))!r} (needs {v!r})"
                          for p, v in _constants(sub).items() if get(native, join(base, p)) != v]
                      for k, (_, sub) in self.options.items()}
            kind = next((k for k, miss in misses.items() if not miss), None)
            if kind is None:
                run.native_subtrees.add(base)
                run.problems.append(f"no {dotted(join(h, self.hf, self.key))} of {run.family} fits: " + "; ".join(
                    f"{k} needs {miss[0]}" for k, miss in misses.items()))
                return
        if kind not in self.options:
            run.native_subtrees.add(base)
            run.problems.append(f"{dotted(join(base, 'type'))} = {kind!r} cannot be exported as {run.family} "
                                f"(supported: {', '.join(self.options)})")
            return
        spelled, rules = self.options[kind]
        run.write(hf, join(h, self.hf, self.key), _names(spelled)[0], base)
        _export(rules, native, hf, base, join(h, self.hf), run)


@dataclass(frozen=True, slots=True)
class Nested(Rule):
    """Rules of a sub-section, rooted at `native` and `hf` (either may be empty). An `optional` section is
    skipped on import when its HF dict is absent, and on export when its native config is None."""

    native: str
    hf: str
    rules: tuple
    optional: bool = False

    def to_native(self, hf: dict, native: dict, n: Path, h: Path, run: _Run) -> None:
        if self.optional and get(hf, join(h, self.hf), None) is None:
            run.hf_claims.add(join(h, self.hf))
            return
        _import(self.rules, hf, native, join(n, self.native), join(h, self.hf), run)

    def to_hf(self, native: dict, hf: dict, n: Path, h: Path, run: _Run) -> None:
        if self.optional and get(native, join(n, self.native), None) is None:
            run.native_claims.add(join(n, self.native))
            return
        _export(self.rules, native, hf, join(n, self.native), join(h, self.hf), run)

    def native_constants(self, prefix: Path) -> dict[Path, Any]:
        return _constants(self.rules, join(prefix, self.native))


@dataclass(frozen=True, slots=True)
class Entries(Rule):
    """The same rules for every entry of a dict of sub-configs (pattern blocks, stochastic sub-mixers)."""

    native: str
    hf: str
    rules: tuple

    def to_native(self, hf: dict, native: dict, n: Path, h: Path, run: _Run) -> None:
        path = join(h, self.hf)
        run.hf_claims.add(path + ("*",))
        entries = get(hf, path, {})
        if not isinstance(entries, dict):
            run.problems.append(f"{dotted(path)} should be a mapping of named entries, got {entries!r}")
            return
        put(native, join(n, self.native), {})
        for name in entries:
            _import(self.rules, hf, native, join(n, self.native, name), path + (name,), run)

    def to_hf(self, native: dict, hf: dict, n: Path, h: Path, run: _Run) -> None:
        base = join(n, self.native)
        run.write(hf, join(h, self.hf), get(hf, join(h, self.hf), {}), base)
        run.native_claims.add(base)
        for name in get(native, base, {}):
            _export(self.rules, native, hf, base + (name,), join(h, self.hf, name), run)


@dataclass(frozen=True, slots=True)
class Layout(Rule):
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

    def to_native(self, hf: dict, native: dict, n: Path, h: Path, run: _Run) -> None:
        path = join(h, self.hf)
        run.hf_claims.add(path)
        names = get(hf, path)
        if not isinstance(names, list) or not names or not all(isinstance(x, str) for x in names):
            run.problems.append(f"{dotted(path)} should be a non-empty list of block names, got {names!r}")
            return
        unknown = sorted(set(names) - set(self.blocks))
        if unknown:
            run.problems.append(f"{dotted(path)} names {unknown}, which {run.family} cannot convert "
                                f"(supported: {', '.join(self.blocks)})")
            return
        base = join(n, self.native)
        if len(names) == 1 and self.single_is_fixed:
            _import(self.blocks[names[0]], hf, native, base + ("block",), h, run)
            return
        put(native, base + ("type",), "pattern")
        put(native, base + ("pattern",), list(names))
        for name in dict.fromkeys(names):
            _import(self.blocks[name], hf, native, base + ("blocks", name), h, run)

    def to_hf(self, native: dict, hf: dict, n: Path, h: Path, run: _Run) -> None:
        base = join(n, self.native)
        sequence = get(native, base)
        run.native_claims.update({base + ("type",), base + ("pattern",)})
        fixed = sequence["type"] == "fixed"
        names, exported = [], {}
        for native_name, block in self.positions(sequence):
            name = native_name if native_name in self.blocks else next(
                (key for key, sub in self.blocks.items()
                 if all(get(block, p) == v for p, v in _constants(sub).items())), None)
            if name is None:
                run.problems.append(f"{dotted(base)}: block {native_name or 'block'!r} matches no layer kind of "
                                    f"{run.family} (supported: {', '.join(self.blocks)})")
                return
            names.append(name)
            exported[native_name] = name
        run.write(hf, join(h, self.hf), names, base)
        for native_name, name in exported.items():
            _export(self.blocks[name], native, hf, base + (("block",) if fixed else ("blocks", native_name)), h, run)
        if not fixed:
            run.native_subtrees.update(base + ("blocks", u) for u in set(sequence["blocks"]) - set(exported))


def _in(value: Any, table: Mapping) -> bool:
    """Whether a config value is a key of `table` (a list or a mapping, which cannot be one, is not)."""
    try:
        return value in table
    except TypeError:
        return False


def _names(spelled: Any) -> tuple:
    return spelled if isinstance(spelled, tuple) else (spelled,)


def _constants(rules: tuple, prefix: Path = ()) -> dict[Path, Any]:
    """The native constants of a rule table (through nested sections), by path."""
    out: dict[Path, Any] = {}
    for rule in rules:
        out.update(rule.native_constants(prefix))
    return out


def _rules(rules: tuple, family: str) -> tuple:
    for rule in rules:
        if not isinstance(rule, Rule):
            raise SpecError(f"{family}: {rule!r} is not a config rule")
    return rules


def _import(rules: tuple, hf: dict, native: dict, n: Path, h: Path, run: _Run) -> None:
    for rule in _rules(rules, run.family):
        rule.to_native(hf, native, n, h, run)


def _export(rules: tuple, native: dict, hf: dict, n: Path, h: Path, run: _Run) -> None:
    for rule in sorted(_rules(rules, run.family), key=lambda r: r.late):  # late rules read what the others wrote
        rule.to_hf(native, hf, n, h, run)


def from_hf(rules: tuple, hf: dict, family: str, metadata_keys: frozenset[str],
            undefined: tuple[Path, ...] = ()) -> tuple[dict, list[Path], dict[Path, Path]]:
    """The explicit native config for an HF config dict; the `undefined` keys (keys the HF config class does not
    define, which cannot change the model) that no rule read: they are accepted as they are; and the HF key each
    native field was read from, where one was.

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
            run.unknown.append(f"unknown key {dotted(path)!r} (value {shown(value)})")
    if run.problems or run.unknown:
        hints = []
        if run.unknown:
            hints.append("the HF config class of this format defines these keys and no rule converts them, so they "
                         "may change the model: check --format, or report the key")
        if run.missing:
            hints.append("add the missing keys to config.json: the config class of this format gives them no default")
        raise ConfigError(report(f"{family}: config.json cannot be imported", run.problems + run.unknown,
                                 "; ".join(hints) or None))
    return native, kept, run.sources


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
