"""Every SQL text lakeexportd sends to ksqlDB, written in one place.

Callers say what they want (a stream's ROWTIME window, a table scan, a DESCRIBE) and get the
exact text; the sandbox and the tests parse these strings, so they change only on purpose.

Source names are written as given, never quoted or case-folded here: the configuration admits
only unquoted identifiers (``config.model.KSQL_IDENTIFIER``), which ksqlDB reads in upper case,
as ``SHOW STREAMS`` lists them. A name that is neither such an identifier nor a back-quoted
one is refused with ``FeedError`` before it can become part of a statement (config names
always pass; a hand-edited ``_metadata.json`` read by ``verify --source`` may not).
ROWTIME windows are half-open, ``(lower, upper]`` in epoch milliseconds; no lower bound means
from the start of the topic.
"""

from __future__ import annotations

import re

from lakeexportd.errors import FeedError

_SOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|`[^`]+`")


def list_sources() -> str:
    """Every stream and table: two statements in one request."""
    return "SHOW STREAMS; SHOW TABLES;"


def describe(source: str) -> str:
    """One source's columns and kind."""
    return f"DESCRIBE {_name(source)};"


def stream_window(source: str, lower: int | None, upper: int) -> str:
    """A stream's rows with ROWTIME in ``(lower, upper]``, ROWTIME first (an export run)."""
    return f"SELECT ROWTIME, * FROM {_name(source)} WHERE {_rowtime_in(lower, upper)};"


def window_rowtimes(source: str, lower: int | None, upper: int) -> str:
    """Only the ROWTIMEs of a stream's rows in ``(lower, upper]`` (a recount)."""
    return f"SELECT ROWTIME FROM {_name(source)} WHERE {_rowtime_in(lower, upper)};"


def table_scan(source: str) -> str:
    """Every row of a table as it is now."""
    return f"SELECT * FROM {_name(source)};"


def _rowtime_in(lower: int | None, upper: int) -> str:
    if lower is None:
        return f"ROWTIME <= {upper}"
    return f"ROWTIME > {lower} AND ROWTIME <= {upper}"


def _name(source: str) -> str:
    if not _SOURCE_NAME.fullmatch(source):
        raise FeedError(
            f"{source!r} is not a ksqlDB source name, so no statement was sent; use the name "
            "as SHOW STREAMS/SHOW TABLES lists it (letters, digits and '_', or `back-quoted`)"
        )
    return source
