"""The one exception hierarchy of weightport.

Every error says what is wrong, where (file, tensor or config key) and what to do about it. The CLI prints
the message without a traceback; library users catch `WeightportError`.
"""

from __future__ import annotations


class WeightportError(Exception):
    """Base class of every error weightport raises on purpose."""


class SpecError(WeightportError):
    """A family declaration is wrong (an authoring bug found when the declaration is built or walked)."""


class FormatError(WeightportError):
    """A file is missing, unreadable, or not in the expected format."""


class ConfigError(WeightportError):
    """A config cannot be converted: an unknown or missing key, a bad value, or a value the target cannot hold."""


class CoverageError(WeightportError):
    """Tensors are missing, unclaimed, duplicated or of the wrong shape; lists every problem at once."""


class OutputError(WeightportError):
    """The destination cannot be written (it exists, or the file system refused)."""


def report(title: str, problems: list[str], hint: str | None = None, limit: int = 40) -> str:
    """Format a list of problems as one message: a title line, indented items, and an optional hint."""
    lines = [f"{title} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"]
    lines += [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    if hint:
        lines.append(f"hint: {hint}")
    return "\n".join(lines)
