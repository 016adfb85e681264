"""The registry of families: format name -> module, and HF `model_type` -> format name (a table, not a guess)."""

from __future__ import annotations

import importlib

from weightport.core.spec import ModelSpec
from weightport.errors import ConfigError

FAMILIES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "mixtral": "mixtral", "mtp_llama": "mtp_llama",
            "apriel_hybrid_ssm": "apriel_hybrid_ssm", "apriel2_text": "apriel2_text",
            "gemma4": "gemma4"}
# Formats of the native framework that weightport does not convert yet.
PLANNED = ("llava", "llava_hybrid_ssm",
           "apriel2")


def load(name: str) -> ModelSpec:
    """The declaration of format `name`."""
    if name not in FAMILIES:
        known = ", ".join(FAMILIES)
        if name in PLANNED:
            raise ConfigError(f"format {name!r} is not supported yet (supported: {known})")
        raise ConfigError(f"unknown format {name!r} (supported: {known})")
    spec = importlib.import_module(f"weightport.families.{FAMILIES[name]}").SPEC
    return spec


def detect(model_type: object) -> str:
    """The format whose HF `model_type` this is."""
    for name in FAMILIES:
        if load(name).model_type == model_type:
            return name
    raise ConfigError(f"config.json has model_type {model_type!r}, which no supported format uses "
                      f"(supported: {', '.join(FAMILIES)}); pass --format to choose one")
