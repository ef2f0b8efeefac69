"""Plan a SELECT against the catalog: output columns, row accessors, WHERE, LIMIT, kind.

Validation mirrors ksqlDB's own messages (wire reference section 7) so a client sees the same
errors it would see from a real server.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lakeexportd.sandbox import syntax
from lakeexportd.sandbox.errors import PULL_SUFFIX
from lakeexportd.sandbox.sources import Source, StreamSource
from lakeexportd.sandbox.sqltypes import SqlType
from lakeexportd.sandbox.where import (
    PSEUDO,
    PSEUDO_GETTERS,
    Getter,
    Predicate,
    column_getter,
    compile_where,
    statement_error,
)


@dataclass
class Plan:
    source: Source
    kind: str  # "table_pull", "stream_pull" or "push"
    names: list[str]
    types: list[SqlType]
    key_flags: list[bool]
    getters: list[Getter]
    star: bool  # exactly the source's columns: the cached row text can be used
    rowtime_star: bool  # ROWTIME followed by exactly the source's columns
    where: Predicate | None
    limit: int | None
    query_id: str
    sql: str

    @property
    def column_types(self) -> list[str]:
        return [str(t) for t in self.types]

    def values(self, stored: Sequence[Any], rowtime: int, partition: int, offset: int) -> list[Any]:
        return [g(stored, rowtime, partition, offset) for g in self.getters]

    def header_schema(self) -> str:
        """``LogicalSchema.toString()``: table pull queries mark key columns with KEY."""
        parts = []
        for name, t, key in zip(self.names, self.types, self.key_flags):
            marker = " KEY" if key and self.kind == "table_pull" else ""
            parts.append(f"`{name}` {t}{marker}")
        return ", ".join(parts)


def query_id(kind: str, source: str, rng: random.Random) -> str:
    if kind == "table_pull":
        return f"query_{int(time.time() * 1000)}"
    return f"transient_{source}_{rng.randrange(1, 2**63)}"


def plan(statement: syntax.Select, text: str, sources: dict[str, Source],
         rng: random.Random) -> Plan:
    source = sources.get(statement.source)
    if source is None:
        raise statement_error(
            f"Exception while preparing statement: {statement.source} does not exist.", text)
    kind = "push" if statement.push else ("stream_pull" if source.is_stream else "table_pull")
    if kind != "push":
        for clause, used in (
            ("SELECT", [i.column for i in statement.items if i.column]),
            ("WHERE", sorted(syntax.columns_in(statement.where))),
        ):
            banned = [n for n in used if n in ("ROWPARTITION", "ROWOFFSET")]
            if banned:
                listed = ", ".join(f"`{n}`" for n in banned)
                raise statement_error(
                    f"Pull queries don't support the following columns in {clause} clauses: "
                    f"{listed}{PULL_SUFFIX}", text)
    if statement.limit is not None and statement.limit < 0:
        what = "Push" if statement.push else "Pull"
        raise statement_error(
            f"{what} queries don't support negative integers in the LIMIT clause."
            + (PULL_SUFFIX if not statement.push else ""), text)
    names: list[str] = []
    types: list[SqlType] = []
    keys: list[bool] = []
    getters: list[Getter] = []
    star_at: list[int] = []
    for item in statement.items:
        if item.column is None:
            star_at.append(len(names))
            for c in source.columns:
                names.append(c.name)
                types.append(c.type)
                keys.append(c.key)
                getters.append(column_getter(c.read))
            continue
        if item.column in PSEUDO:
            names.append(item.alias or item.column)
            types.append(PSEUDO[item.column])
            keys.append(False)
            getters.append(PSEUDO_GETTERS[item.column])
            continue
        column = source.column(item.column)
        if column is None:
            raise statement_error(
                f"SELECT column '{item.column}' cannot be resolved.", text)
        names.append(item.alias or column.name)
        types.append(column.type)
        keys.append(column.key)
        getters.append(column_getter(column.read))
    n = len(source.columns)
    plain = len(names) == n and not any(i.alias for i in statement.items)
    star = plain and star_at == [0]
    rowtime_star = (len(statement.items) == 2 and statement.items[0].column == "ROWTIME"
                    and not statement.items[0].alias and star_at == [1])
    where = compile_where(statement.where, source, text) if statement.where else None
    return Plan(
        source=source, kind=kind, names=names, types=types, key_flags=keys, getters=getters,
        star=star, rowtime_star=rowtime_star, where=where, limit=statement.limit,
        query_id=query_id(kind, source.name, rng), sql=text,
    )


def interleave(source: StreamSource, starts: Sequence[int], ends: Sequence[int],
               chunk: int) -> Iterator[tuple[int, int, int]]:
    """(partition, offset, row index) in the order a Kafka consumer hands records over.

    Each partition in offset order; partitions take turns, ``chunk`` records at a time, so the
    result is not sorted by ROWTIME across partitions.
    """
    positions = list(starts)
    by_partition = source.by_partition
    while True:
        progressed = False
        for p, end in enumerate(ends):
            start = positions[p]
            if start >= end:
                continue
            stop = min(end, start + chunk)
            indexes = by_partition[p]
            for offset in range(start, stop):
                yield p, offset, indexes[offset]
            positions[p] = stop
            progressed = True
        if not progressed:
            return

