"""Config rules: one declaration per native field or HF key that converts in both directions.

A family's config table is a tuple of rules. `from_hf` runs every rule against an HF `config.json` dict and builds
the explicit native config; `to_hf` runs them against a resolved native config and builds the HF dict. Both
directions record what each rule claimed, so coverage is checked on every run: an HF key no rule claims is an
error, and so is a native architecture field no rule claims. Rules are frozen values; all run state lives in `_Run`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from weightport.core.paths import MISSING, Path, dotted, get, join, leaves, put
from weightport.errors import ConfigError, SpecError, report


@dataclass(frozen=True, slots=True)
class Rename:
    """The same value under two names; `values` maps HF spellings to native ones (the first HF spelling of each
    native value is the one written); `default` (a value, or a function of the HF section) fills an absent or null
    HF key."""

    native: str
    hf: str
    values: Mapping[Any, Any] | None = None
    default: Any = MISSING


@dataclass(frozen=True, slots=True)
class Constant:
    """A value fixed on one side: a native field set on import and checked on export, or an HF key written on
    export (unless `write=False`) and checked (if present) on import."""

    value: Any
    native: str | None = None
    hf: str | None = None
    reason: str = ""
    write: bool = True


@dataclass(frozen=True, slots=True)
class Derived:
    """A native field computed from the HF section on import; on export the round-trip check verifies it."""

    native: str
    from_hf: Callable[[dict], Any]
    reason: str


@dataclass(frozen=True, slots=True)
class Computed:
    """An HF key computed from the whole native config on export, and checked against it on import (when present)."""

    hf: str
    to_hf: Callable[[dict], Any]
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
    on import the HF name (or `default` when absent) selects it. Each option carries its own rules."""

    native: str
    hf: str
    options: Mapping[str, tuple[str, tuple]]
    key: str = "type"
    default: str | None = None


@dataclass(frozen=True, slots=True)
class Nested:
    """Rules of a sub-section, rooted at `native` and `hf` (either may be empty)."""

    native: str
    hf: str
    rules: tuple


Rule = Union[Rename, Constant, Derived, Computed, Ignore, Choice, Nested]


@dataclass
class _Run:
    family: str
    problems: list[str] = field(default_factory=list)
    hf_claims: set[Path] = field(default_factory=set)
    native_claims: set[Path] = field(default_factory=set)
    native_subtrees: set[Path] = field(default_factory=set)
    computed: list[Path] = field(default_factory=list)


def from_hf(rules: tuple, hf: dict, family: str, metadata_keys: frozenset[str]) -> tuple[dict, list[Path]]:
    """The explicit native config for an HF config dict, and the HF paths of `Computed` keys, which the caller
    checks against the resolved config with `check_computed`.

    Raises ConfigError listing every unknown, missing or unsupported key at once.
    """
    run = _Run(family)
    native: dict = {}
    _import(rules, hf, native, (), (), run)
    for path, value in leaves(hf).items():
        if not path or path[0] in metadata_keys or path[-1] in metadata_keys:
            continue
        claimed = any(path[: len(c)] == c for c in run.hf_claims)
        if value is None:  # a null section counts as absent: claimed if any rule reads inside it
            claimed = claimed or any(c[: len(path)] == path for c in run.hf_claims)
        if not claimed:
            run.problems.append(f"unknown key {dotted(path)!r} (value {value!r})")
    if run.problems:
        raise ConfigError(report(
            f"{family}: config.json cannot be imported", run.problems,
            "a key weightport does not know may change the model; check --format, or report the key"))
    return native, run.computed


def check_computed(rules: tuple, hf: dict, native: dict, paths: list[Path], family: str) -> None:
    """Every `Computed` HF key present in `hf` must equal what the resolved native config implies."""
    expected = to_hf(rules, native, family)
    problems = [
        f"{dotted(p)} = {get(hf, p)!r}, but the rest of the config implies {get(expected, p)!r}"
        for p in paths if get(hf, p) is not MISSING and get(hf, p) != get(expected, p)
    ]
    if problems:
        raise ConfigError(report(f"{family}: config.json is inconsistent", problems))


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


def _import(rules: tuple, hf: dict, native: dict, n: Path, h: Path, run: _Run) -> None:
    section = get(hf, h, {})
    for rule in rules:
        if isinstance(rule, Rename):
            path = join(h, rule.hf)
            run.hf_claims.add(path)
            value = get(hf, path)
            if value is MISSING or (value is None and rule.default is not MISSING):
                if rule.default is MISSING:
                    run.problems.append(f"missing key {dotted(path)!r}")
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
            put(native, join(n, rule.native), value)
        elif isinstance(rule, Constant):
            if rule.native is not None:
                put(native, join(n, rule.native), rule.value)
            else:
                path = join(h, rule.hf)
                run.hf_claims.add(path)
                value = get(hf, path)
                if value is not MISSING and value != rule.value:
                    run.problems.append(f"{dotted(path)} = {value!r}, but {run.family} requires {rule.value!r}")
        elif isinstance(rule, Derived):
            try:
                put(native, join(n, rule.native), rule.from_hf(section))
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
                run.problems.append(f"cannot derive {dotted(join(n, rule.native))} ({rule.reason}): {err!r}")
        elif isinstance(rule, Computed):
            run.hf_claims.add(join(h, rule.hf))
            run.computed.append(join(h, rule.hf))
        elif isinstance(rule, Ignore):
            if rule.hf is not None:
                run.hf_claims.add(join(h, rule.hf))
        elif isinstance(rule, Choice):
            path = join(h, rule.hf, rule.key)
            run.hf_claims.add(path)
            name = get(hf, path, None)
            name = rule.default if name is None else name
            match = [t for t, (hf_name, _) in rule.options.items() if hf_name == name]
            if not match:
                supported = ", ".join(hf_name for hf_name, _ in rule.options.values())
                run.problems.append(f"{dotted(path)} = {name!r} is not supported (supported: {supported})")
                continue
            put(native, join(n, rule.native, "type"), match[0])
            _import(rule.options[match[0]][1], hf, native, join(n, rule.native), join(h, rule.hf), run)
        elif isinstance(rule, Nested):
            _import(rule.rules, hf, native, join(n, rule.native), join(h, rule.hf), run)
        else:
            raise SpecError(f"{run.family}: {rule!r} is not a config rule")


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
                if value != rule.value:
                    run.problems.append(
                        f"{dotted(path)} = {value!r} cannot be represented: {run.family} requires {rule.value!r}"
                        + (f" ({rule.reason})" if rule.reason else ""))
            elif rule.write:
                _write(hf, join(h, rule.hf), rule.value, (), run)
        elif isinstance(rule, Derived):
            run.native_claims.add(join(n, rule.native))
        elif isinstance(rule, Computed):
            _write(hf, join(h, rule.hf), rule.to_hf(native), (), run)
        elif isinstance(rule, Ignore):
            if rule.native is not None:
                run.native_subtrees.add(join(n, rule.native))
        elif isinstance(rule, Choice):
            base = join(n, rule.native)
            run.native_claims.add(join(base, "type"))
            kind = get(native, join(base, "type"))
            if kind not in rule.options:
                run.problems.append(
                    f"{dotted(join(base, 'type'))} = {kind!r} cannot be exported as {run.family} "
                    f"(supported: {', '.join(rule.options)})")
                continue
            hf_name, sub_rules = rule.options[kind]
            _write(hf, join(h, rule.hf, rule.key), hf_name, base, run)
            _export(sub_rules, native, hf, base, join(h, rule.hf), run)
        elif isinstance(rule, Nested):
            _export(rule.rules, native, hf, join(n, rule.native), join(h, rule.hf), run)
        else:
            raise SpecError(f"{run.family}: {rule!r} is not a config rule")
