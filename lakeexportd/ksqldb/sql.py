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

A realtime feed's push query (``push_after``) reads ROWPARTITION and ROWOFFSET, which ksqlDB
allows in a push query's SELECT and WHERE only (wire reference 7.3); its WHERE uses nothing but
``=``, ``<>``, ``>``, AND, OR and parentheses, which ksqlDB and the sandbox both parse (no IN:
the sandbox leaves it out).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

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


def push_after(source: str, offsets: Mapping[int, int], after_ms: int | None) -> str:
    """A push query for exactly the rows after a committed point, pseudo columns first.

    For each partition p with a committed offset o, ``(ROWPARTITION = p AND ROWOFFSET > o)``;
    every other partition (none committed yet, or one that appears later) from its first
    row. ``after_ms`` (a feed switched from batch mode, or started ``now``) applies to every
    partition, for good: the batch runs before the switch hold the rows at or before it, and
    a row of a committed partition with an older ROWTIME must be left out on every
    reconnection alike (the server never tells which rows its WHERE dropped). Partitions are
    written in ascending order, so the same point gives the same text::

        SELECT ROWPARTITION, ROWOFFSET, ROWTIME, * FROM S WHERE ROWTIME > 1700000000000 AND
        ((ROWPARTITION = 0 AND ROWOFFSET > 41) OR (ROWPARTITION = 1 AND ROWOFFSET > 7) OR
        (ROWPARTITION <> 0 AND ROWPARTITION <> 1)) EMIT CHANGES;

    ksqlDB evaluates this per record on the server, but every push query reads its topic from
    ``auto.offset.reset`` on: the runner asks for ``earliest`` and drops rows at or below the
    committed point itself too.
    """
    committed = sorted(offsets.items())
    if any(p < 0 or o < 0 for p, o in committed) or (after_ms is not None and after_ms < 0):
        raise ValueError(f"partitions, offsets and times are never negative: "
                         f"{dict(committed)}, {after_ms}")
    conditions = []
    if after_ms is not None:
        conditions.append(f"ROWTIME > {after_ms}")
    if committed:
        after = [f"(ROWPARTITION = {p} AND ROWOFFSET > {o})" for p, o in committed]
        rest = [f"ROWPARTITION <> {p}" for p, _ in committed]
        after.append(rest[0] if len(rest) == 1 else "(" + " AND ".join(rest) + ")")
        either = " OR ".join(after)
        conditions.append(f"({either})" if conditions else either)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT ROWPARTITION, ROWOFFSET, ROWTIME, * FROM {_name(source)}{where} EMIT CHANGES;"


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
