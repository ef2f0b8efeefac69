"""Durations as operators write them (``500ms``, ``2s``, ``5m``, ``1h``, ``1d``, ``1h30m``).

Pure functions: text in, seconds (float) out, and back. A bare number is refused on purpose:
``settle_delay: 30`` could mean seconds or milliseconds, and guessing wrong loses rows.
"""

from __future__ import annotations

import re

_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = r"(\d+(?:\.\d+)?)(ms|s|m|h|d)"
_WHOLE = re.compile(rf"(?:{_PART})+")
_PARTS = re.compile(_PART)

DURATION_HELP = "a duration needs a unit: 500ms, 2s, 5m, 1h or 1d (combined like 1h30m)"


def parse_duration(text: str) -> float:
    """Return the seconds in ``text``; raise ``ValueError`` if it is not a duration."""
    compact = text.strip().replace(" ", "")
    if not _WHOLE.fullmatch(compact):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * _UNITS[unit] for number, unit in _PARTS.findall(compact))


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` that ``parse_duration`` reads back."""
    if seconds == 0:
        return "0s"
    millis = round(seconds * 1000)
    if abs(millis - seconds * 1000) > 1e-6:
        return f"{seconds:g}s"
    parts: list[str] = []
    for unit in ("d", "h", "m", "s", "ms"):
        size = round(_UNITS[unit] * 1000)
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
