"""Remote modeling code: the Python files transformers loads for a config.json whose `auto_map` names classes
(`from_pretrained(..., trust_remote_code=True)`).

transformers loads each module `auto_map` names from `<module>.py` beside config.json, then copies the files that
module imports relatively (`from .x import y`, also inside `try:`), transitively; a missing one fails the load.
These functions find the same files, so an export can carry exactly what loading needs.
"""

from __future__ import annotations

import re
from pathlib import Path

from weightport.errors import ConfigError, shown

# transformers' own patterns (dynamic_module_utils.get_relative_imports)
_RELATIVE = re.compile(r"^\s*import\s+\.(\S+)\s*$|^\s*from\s+\.(\S+)\s+import", re.MULTILINE)


def modules(config: dict) -> list[str]:
    """The module files (`modeling_x.py`) that a config.json's `auto_map` names, in order. Classes kept in another
    Hub repository (`org/repo--module.Class`) need no file here."""
    files = []
    auto_map = config.get("auto_map") or {}
    if not isinstance(auto_map, dict):
        raise ConfigError(f"config.json auto_map = {shown(auto_map)} should map class names to modules; fix it")
    for value in auto_map.values():
        for reference in value if isinstance(value, list) else [value]:  # AutoTokenizer maps to [slow, fast]
            if isinstance(reference, str) and "." in reference and "--" not in reference:
                files.append(reference.rsplit(".", 1)[0] + ".py")
    return list(dict.fromkeys(files))


def python_files(folder: Path) -> dict[str, Path]:
    """The top-level `.py` files of `folder`, by name."""
    return {p.name: p for p in sorted(Path(folder).glob("*.py")) if p.is_file()}


def needed(available: dict[str, Path], names: list[str]) -> tuple[list[Path], list[str]]:
    """(the files loading needs, the names of those missing): the module files `names` and, transitively, the
    files they import relatively, looked up by name in `available`."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    queue = list(names)
    while queue:
        name = queue.pop(0)
        if name in found or name in missing:
            continue
        if name not in available:
            missing.append(name)
            continue
        found[name] = available[name]
        text = available[name].read_text(encoding="utf-8", errors="replace")
        queue += [f"{a or b}.py" for a, b in _RELATIVE.findall(text)]
    return list(found.values()), missing
