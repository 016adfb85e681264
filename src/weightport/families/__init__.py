"""The registry of families: format name -> module of the same name, and HF `model_type` -> format name (a table
lookup, not a guess)."""

from __future__ import annotations

import importlib

from weightport.core.spec import ModelSpec
from weightport.errors import ConfigError

_REGISTERED: dict[str, ModelSpec] = {}  # families added at run time with `register`
FAMILIES = ("llama", "mistral", "qwen2", "mixtral", "mtp_llama", "apriel_hybrid_ssm", "apriel2_text", "gemma4",
            "llava", "llava_hybrid_ssm", "apriel2", "gemma4_vlm", "mistral3")


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


def detect(model_type: object) -> str:
    """The format whose HF `model_type` this is."""
    for name in names():
        spec = load(name)
        if model_type == spec.model_type or model_type in spec.aliases:
            return name
    found = "no model_type" if model_type is None else f"model_type {model_type!r}, which no supported format uses"
    raise ConfigError(f"config.json has {found} (supported: {', '.join(FAMILIES)}); pass --format to choose one")
