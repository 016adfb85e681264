"""The one exception hierarchy of weightport.

Every error says what is wrong, where (file, tensor or config key) and what to do about it. The CLI prints
the message without a traceback; library users catch `WeightportError`.
"""

from __future__ import annotations

import reprlib

_SHOWN = reprlib.Repr()
for _limit, _value in dict(maxlevel=3, maxdict=6, maxlist=6, maxtuple=6, maxset=6, maxstring=80, maxlong=40,
                           maxother=80).items():
    setattr(_SHOWN, _limit, _value)


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


def shown(value: object) -> str:
    """A value as a message writes it: its repr, cut short (a list of a million entries, a number of thousands of
    digits, a YAML alias bomb expanded: a few dozen characters)."""
    return _SHOWN.repr(value)


def report(title: str, problems: list[str], hint: str | None = None, limit: int = 40) -> str:
    """Format a list of problems as one message: a title line, indented items, and an optional hint."""
    lines = [f"{title} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"]
    lines += [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    if hint:
        lines.append(f"hint: {hint}")
    return "\n".join(lines)
