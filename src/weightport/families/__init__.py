"""The registry of families: format name -> module of the same name, and HF `model_type` -> format name (a table
lookup, not a guess)."""

from __future__ import annotations

import importlib

from weightport.core.spec import ModelSpec
from weightport.errors import ConfigError

FAMILIES = ("llama", "mistral", "qwen2", "mixtral", "mtp_llama", "apriel_hybrid_ssm", "apriel2_text", "gemma4",
            "llava", "llava_hybrid_ssm", "apriel2")


def load(name: str) -> ModelSpec:
    """The declaration of format `name`."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown format {name!r} (supported: {', '.join(FAMILIES)})")
    return importlib.import_module(f"weightport.families.{name}").SPEC


def detect(model_type: object) -> str:
    """The format whose HF `model_type` this is."""
    for name in FAMILIES:
        spec = load(name)
        if model_type == spec.model_type or model_type in spec.aliases:
            return name
    raise ConfigError(f"config.json has model_type {model_type!r}, which no supported format uses "
                      f"(supported: {', '.join(FAMILIES)}); pass --format to choose one")
