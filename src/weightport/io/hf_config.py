"""HF `config.json` read and written as plain JSON (no transformers classes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from weightport.errors import FormatError

def read_config(path: Path) -> dict[str, Any]:
    """The parsed `config.json` at `path`; FormatError if absent or not a JSON object."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"{path}: not found; an HF checkpoint folder needs a config.json") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        why = str(err)
        if "integer string conversion" in why:  # a ValueError of int(), not json's: more digits than Python reads
            why = f"an integer of more than {sys.get_int_max_str_digits()} digits, which no config value can be"
        raise FormatError(f"{path}: cannot be read as JSON ({why}); "
                          f"fix the file or re-download the checkpoint") from None
    if not isinstance(config, dict):
        raise FormatError(f"{path}: the top level must be a JSON object; fix the file or re-download the checkpoint")
    return config


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Write `config.json` the way transformers does: sorted keys, indent 2, final newline."""
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
