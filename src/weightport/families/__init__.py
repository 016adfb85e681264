"""The registry of families: format name -> module of the same name, and HF config.json -> format name (a table
lookup, not a guess: its `model_type`, and where formats share one, the values each names in `detect_by`)."""

from __future__ import annotations

import importlib

from weightport.core.spec import ModelSpec
from weightport.errors import ConfigError

_REGISTERED: dict[str, ModelSpec] = {}  # families added at run time with `register`
FAMILIES = ("llama", "mistral", "qwen2", "mixtral", "mtp_llama", "apriel_hybrid_ssm", "apriel2_text", "gemma4",
            "llava", "llava_hybrid_ssm", "apriel2", "gemma4_vlm", "mistral3", "llava_clip")


def register(spec: ModelSpec) -> None:
    """Add a family declared outside weightport (see docs/adding-a-family.md); its name must be new."""
    if spec.name in FAMILIES or spec.name in _REGISTERED:
        raise ConfigError(f"format {spec.name!r} is already registered")
    _REGISTERED[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a family added with `register` (built-in families stay)."""
    if name not in _REGISTERED:
        raise ConfigError(f"format {name!r} was not registered")
    del _REGISTERED[name]


def names() -> tuple[str, ...]:
    """Every format name, built in and registered."""
    return FAMILIES + tuple(_REGISTERED)


def load(name: str) -> ModelSpec:
    """The declaration of format `name`."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in FAMILIES:
        raise ConfigError(f"unknown format {name!r} (supported: {', '.join(FAMILIES)})")
    return importlib.import_module(f"weightport.families.{name}").SPEC


def detect(config: object) -> str:
    """The format of an HF config.json (a dict; a bare `model_type` is read as a config holding only it): the one
    whose HF `model_type` it has and, where formats share that type, whose `detect_by` values it has."""
    if not isinstance(config, dict):
        config = {"model_type": config}
    model_type = config.get("model_type")
    sharing = []
    for name in names():
        spec = load(name)
        if _has_type(spec, model_type):
            if not _unmatched(spec, config):
                return name
            sharing.append(spec)
    if sharing:
        found = ", ".join(_found(config, key) for key in dict.fromkeys(k for spec in sharing for k in spec.detect_by))
        raise ConfigError(f"config.json has model_type {model_type!r} and {found}, which no format of that type "
                          f"reads ({_needs(sharing)}); weightport does not convert this model")
    if model_type is None:
        raise ConfigError(f"config.json has no model_type; pass --format to choose one of: {', '.join(names())}")
    raise unsupported(model_type)


def model_types() -> list[str]:
    """The HF `model_type`s weightport reads (each format's, and the older names it also reads), without repeats."""
    return list(dict.fromkeys(t for spec in map(load, names()) for t in (spec.model_type, *spec.aliases)))


def unsupported(model_type: object) -> ConfigError:
    """The error for a config.json of a model type that no format reads."""
    return ConfigError(f"config.json has model_type {model_type!r}, which weightport does not convert (no format "
                       f"reads it, so --format cannot help); supported model types: {', '.join(model_types())}. "
                       "`weightport formats` lists the formats; report the model type if you need it")


def check(spec: ModelSpec, config: dict) -> None:
    """Raise ConfigError if an HF config.json is another format's, given this format with --format: of another
    `model_type` that a format reads, or of `spec`'s type without the values `spec.detect_by` names. The message
    names the keys, their values, the format the config is and what to do."""
    if not isinstance(config, dict) or config.get("model_type") is None:
        return
    if not _has_type(spec, config["model_type"]):
        if config["model_type"] not in model_types():
            raise unsupported(config["model_type"])
        try:
            other = detect(config)
        except ConfigError:
            return  # formats of that model type read other values: the rules say what differs
        raise ConfigError(f"config.json has model_type = {config['model_type']!r}, but format {spec.name} reads "
                          f"model_type {spec.model_type!r}; it is a {other} checkpoint: drop --format (or pass "
                          f"--format {other})")
    wrong = _unmatched(spec, config)
    if not wrong:
        return
    try:
        other = detect(config)
    except ConfigError:
        others = [s for s in map(load, names()) if s.name != spec.name and _has_type(s, config.get("model_type"))]
        told = f" ({_needs(others)})" if others else ""
        hint = f"no format reads it{told}: weightport does not convert this model"
    else:
        hint = f"it is a {other} checkpoint: drop --format (or pass --format {other})"
    raise ConfigError(f"config.json has {', '.join(_found(config, key) for key in wrong)}, but format {spec.name} "
                      f"needs {_accepts(spec, wrong)}; {hint}")


def _has_type(spec: ModelSpec, model_type: object) -> bool:
    return model_type == spec.model_type or model_type in spec.aliases


def _unmatched(spec: ModelSpec, config: dict) -> list[str]:
    """The `detect_by` keys of `spec` whose values `config` does not have."""
    return [key for key, values in spec.detect_by.items() if _value(config, key) not in values]


def _found(config: dict, key: str) -> str:
    value = _value(config, key)
    return f"no {key}" if value is None else f"{key} = {value!r}"


def _needs(specs: list[ModelSpec]) -> str:
    """What each format's `detect_by` accepts: `llava: vision_config.model_type 'pixtral'`."""
    return "; ".join(f"{spec.name}: {_accepts(spec)}" for spec in specs)


def _accepts(spec: ModelSpec, keys: list[str] | None = None) -> str:
    """The values `spec.detect_by` accepts (at `keys`): `vision_config.model_type 'clip_vision_model' or absent`."""
    return ", ".join(f"{key} " + " or ".join("absent" if v is None else repr(v) for v in values)
                     for key, values in spec.detect_by.items() if keys is None or key in keys)


def _value(config: dict, key: str) -> object:
    """The value at a dotted key of `config` (None where absent)."""
    for part in key.split("."):
        if not isinstance(config, dict):
            return None
        config = config.get(part)
    return config
