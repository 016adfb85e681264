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
        if model_type == spec.model_type or model_type in spec.aliases:
            if all(_value(config, key) in values for key, values in spec.detect_by.items()):
                return name
            sharing.append(spec)
    if sharing:
        told = "; ".join(f"{spec.name} has " + ", ".join(f"{key} in {list(values)}"
                                                         for key, values in spec.detect_by.items())
                         for spec in sharing)
        found = ", ".join(f"{key} = {_value(config, key)!r}" for key in dict.fromkeys(
            key for spec in sharing for key in spec.detect_by))
        raise ConfigError(f"config.json has model_type {model_type!r} and {found}, which no format of that type "
                          f"reads ({told}); pass --format to choose one")
    found = "no model_type" if model_type is None else f"model_type {model_type!r}, which no supported format uses"
    raise ConfigError(f"config.json has {found} (supported: {', '.join(FAMILIES)}); pass --format to choose one")


def _value(config: dict, key: str) -> object:
    """The value at a dotted key of `config` (None where absent)."""
    for part in key.split("."):
        if not isinstance(config, dict):
            return None
        config = config.get(part)
    return config
