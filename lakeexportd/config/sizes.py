"""Sizes as operators write them (``256MiB``, ``1GiB``, ``500MB``, ``4096B``).

Pure functions: text in, bytes (int) out, and back. A bare number is refused like a bare
duration: ``target_file_size: 256`` could mean bytes or MiB.
"""

from __future__ import annotations

import re

_UNITS: dict[str, int] = {
    "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)")

SIZE_HELP = "a size needs a unit: 4096B, 64KiB, 256MiB, 1GiB (or KB, MB, GB: powers of 1000)"


def parse_size(text: str) -> int:
    """Return the bytes in ``text``; raise ``ValueError`` if it is not a size."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return round(float(m[1]) * _UNITS[m[2]])


def format_size(size: int) -> str:
    """The shortest exact binary spelling of ``size`` that ``parse_size`` reads back."""
    for unit in ("GiB", "MiB", "KiB"):
        whole, rest = divmod(size, _UNITS[unit])
        if whole and not rest:
            return f"{whole}{unit}"
    return f"{size}B"
