"""HF `config.json` as plain JSON, and the two on-disk layouts of rotary settings.

transformers 4 writes `rope_theta` and `rope_scaling` at the top level; transformers 5 writes one
`rope_parameters` dict holding `rope_theta` and `rope_type`. Family rules are written against the
transformers 5 layout; `normalize` brings a transformers 4 config to it, and `relayout` goes back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from weightport.errors import FormatError

LAYOUTS = ("transformers5", "transformers4")
DEFAULT_LAYOUT = "transformers5"


def read_config(path: Path) -> dict[str, Any]:
    """The parsed `config.json` at `path`; FormatError if absent or not a JSON object."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"{path}: not found; an HF checkpoint folder needs a config.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FormatError(f"{path}: cannot be read as JSON ({err})") from err
    if not isinstance(config, dict):
        raise FormatError(f"{path}: the top level must be a JSON object")
    return config


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Write `config.json` the way transformers does: sorted keys, indent 2, final newline."""
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def normalize(config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The config in the transformers 5 rotary layout, and the layout it was found in."""
    if "rope_parameters" in config or not ({"rope_theta", "rope_scaling"} & set(config)):
        return config, DEFAULT_LAYOUT
    out = dict(config)
    scaling = out.pop("rope_scaling", None) or {}
    if not isinstance(scaling, dict):
        raise FormatError(f"config.json: rope_scaling must be an object or null, got {scaling!r}")
    params = dict(scaling)
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params.pop("type")
    if "rope_theta" in out:
        params["rope_theta"] = out.pop("rope_theta")
    out["rope_parameters"] = params
    return out, "transformers4"


def relayout(config: dict[str, Any], layout: str) -> dict[str, Any]:
    """The config (in the transformers 5 layout) written in `layout`."""
    if layout == DEFAULT_LAYOUT or "rope_parameters" not in config:
        return config
    out = dict(config)
    params = dict(out.pop("rope_parameters"))
    out["rope_theta"] = params.pop("rope_theta", None)
    out["rope_scaling"] = None if params.get("rope_type", "default") == "default" and len(params) <= 1 else params
    return out
