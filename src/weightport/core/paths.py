"""Dotted paths into nested dicts: parse, join, get, set, and list leaves.

Config rules address values by dotted paths (`decoder.block.mixer.heads`); an empty path is the root.
"""

from __future__ import annotations

from typing import Any

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<missing>"})()

Path = tuple[str, ...]


def split(path: str | Path) -> Path:
    """`"a.b"` -> `("a", "b")`; `""` -> `()`; tuples pass through."""
    if isinstance(path, tuple):
        return path
    return tuple(path.split(".")) if path else ()


def join(*parts: str | Path) -> Path:
    """Concatenate paths, skipping empty ones."""
    return tuple(p for part in parts for p in split(part))


def dotted(path: Path) -> str:
    """`("a", "b")` -> `"a.b"`, for messages; a key that itself holds a dot is quoted: `'"transformers.js_config"'`."""
    return ".".join(f'"{key}"' if "." in key else key for key in path) or "<root>"


def get(tree: Any, path: Path, default: Any = MISSING) -> Any:
    """The value at `path`, or `default` if any step is absent."""
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return default
        tree = tree[key]
    return tree


def put(tree: dict, path: Path, value: Any) -> None:
    """Set the value at `path`, creating dicts on the way."""
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def remove(tree: dict, path: Path) -> None:
    """Delete the value at `path`, and any dict left empty by that."""
    parent = get(tree, path[:-1])
    if isinstance(parent, dict):
        parent.pop(path[-1], None)
        if not parent and len(path) > 1:
            remove(tree, path[:-1])


def leaves(tree: Any, prefix: Path = (), lists: bool = False) -> dict[Path, Any]:
    """Every non-dict value of a nested dict, by path (an empty dict counts as a leaf). With `lists`, the items of
    non-empty lists are leaves too, by index (`decoder.blocks.3.mixer.heads`), for messages that name one value."""
    if lists and isinstance(tree, list) and tree:
        tree = {str(i): item for i, item in enumerate(tree)}
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    out: dict[Path, Any] = {}
    for key, value in tree.items():
        out.update(leaves(value, prefix + (str(key),), lists))
    return out
