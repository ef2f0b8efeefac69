"""Plan a SELECT against the catalog: output columns, row accessors, WHERE, LIMIT, kind.

Validation mirrors ksqlDB's own messages (wire reference section 7) so a client sees the same
errors it would see from a real server.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lakeexportd.ksql_types import KsqlType, parse_date_days, parse_time_ms
from lakeexportd.sandbox import sql
from lakeexportd.sandbox.errors import PULL_SUFFIX, KsqlError, bad_statement
from lakeexportd.sandbox.sources import Source, StreamSource

# stored row, ROWTIME, partition, offset
Getter = Callable[[Sequence[Any], int, int, int], Any]
Predicate = Callable[[Sequence[Any], int, int, int], bool]

PSEUDO = {
    "ROWTIME": KsqlType("BIGINT"),
    "ROWPARTITION": KsqlType("INTEGER"),
    "ROWOFFSET": KsqlType("BIGINT"),
}
_PSEUDO_GETTERS: dict[str, Getter] = {
    "ROWTIME": lambda s, t, p, o: t,
    "ROWPARTITION": lambda s, t, p, o: p,
    "ROWOFFSET": lambda s, t, p, o: o,
}


@dataclass
class Plan:
    source: Source
    kind: str  # "table_pull", "stream_pull" or "push"
    names: list[str]
    types: list[KsqlType]
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


def plan(statement: sql.Select, text: str, sources: dict[str, Source],
         rng: random.Random) -> Plan:
    source = sources.get(statement.source)
    if source is None:
        raise _statement_error(
            f"Exception while preparing statement: {statement.source} does not exist.", text)
    kind = "push" if statement.push else ("stream_pull" if source.is_stream else "table_pull")
    if kind != "push":
        for clause, used in (
            ("SELECT", [i.column for i in statement.items if i.column]),
            ("WHERE", sorted(sql.columns_in(statement.where))),
        ):
            banned = [n for n in used if n in ("ROWPARTITION", "ROWOFFSET")]
            if banned:
                listed = ", ".join(f"`{n}`" for n in banned)
                raise _statement_error(
                    f"Pull queries don't support the following columns in {clause} clauses: "
                    f"{listed}{PULL_SUFFIX}", text)
    if statement.limit is not None and statement.limit < 0:
        what = "Push" if statement.push else "Pull"
        raise _statement_error(
            f"{what} queries don't support negative integers in the LIMIT clause."
            + (PULL_SUFFIX if not statement.push else ""), text)
    names: list[str] = []
    types: list[KsqlType] = []
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
                getters.append(_column_getter(c.read))
            continue
        if item.column in PSEUDO:
            names.append(item.alias or item.column)
            types.append(PSEUDO[item.column])
            keys.append(False)
            getters.append(_PSEUDO_GETTERS[item.column])
            continue
        column = source.column(item.column)
        if column is None:
            raise _statement_error(
                f"SELECT column '{item.column}' cannot be resolved.", text)
        names.append(item.alias or column.name)
        types.append(column.type)
        keys.append(column.key)
        getters.append(_column_getter(column.read))
    n = len(source.columns)
    plain = len(names) == n and not any(i.alias for i in statement.items)
    star = plain and star_at == [0]
    rowtime_star = (len(statement.items) == 2 and statement.items[0].column == "ROWTIME"
                    and not statement.items[0].alias and star_at == [1])
    where = _compile_where(statement.where, source, text) if statement.where else None
    return Plan(
        source=source, kind=kind, names=names, types=types, key_flags=keys, getters=getters,
        star=star, rowtime_star=rowtime_star, where=where, limit=statement.limit,
        query_id=query_id(kind, source.name, rng), sql=text,
    )


def _statement_error(message: str, text: str) -> KsqlError:
    return bad_statement(f"{message}\nStatement: {text}", text)


def _column_getter(read: Callable[[Sequence[Any]], Any]) -> Getter:
    return lambda s, t, p, o: read(s)


def _compile_where(expr: sql.Expr, source: Source, text: str) -> Predicate:
    compiled = _compile(expr, source, text)
    return lambda s, t, p, o: compiled(s, t, p, o) is True


def _type_of(expr: sql.Expr, source: Source) -> KsqlType | None:
    if isinstance(expr, sql.Col):
        if expr.name in PSEUDO:
            return PSEUDO[expr.name]
        column = source.column(expr.name)
        return column.type if column else None
    return None


def _coerce_literal(value: Any, target: KsqlType | None, text: str) -> Any:
    """ksqlDB compares TIMESTAMP/DATE/TIME (and ROWTIME) columns with string literals."""
    if not isinstance(value, str) or target is None:
        return value
    try:
        if target.base in ("TIMESTAMP", "BIGINT"):
            moment = dt.datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            return int(moment.timestamp() * 1000)
        if target.base == "DATE":
            return parse_date_days(value)
        if target.base == "TIME":
            return parse_time_ms(value)
    except ValueError as exc:
        raise _statement_error(f"Failed to parse literal '{value}': {exc}", text) from exc
    if target.base != "STRING":
        raise _statement_error(f"Cannot compare {target} to STRING literal '{value}'", text)
    return value


def _compile(expr: sql.Expr, source: Source, text: str) -> Getter:
    if isinstance(expr, sql.Lit):
        value = expr.value
        return lambda s, t, p, o: value
    if isinstance(expr, sql.Col):
        if expr.name in _PSEUDO_GETTERS:
            return _PSEUDO_GETTERS[expr.name]
        column = source.column(expr.name)
        if column is None:
            raise _statement_error(f"WHERE column '{expr.name}' cannot be resolved.", text)
        return _column_getter(column.read)
    if isinstance(expr, sql.Not):
        inner = _compile(expr.operand, source, text)

        def negate(s: Sequence[Any], t: int, p: int, o: int) -> Any:
            v = inner(s, t, p, o)
            return None if v is None else not v

        return negate
    if isinstance(expr, sql.IsNull):
        inner = _compile(expr.operand, source, text)
        if expr.negated:
            return lambda s, t, p, o: inner(s, t, p, o) is not None
        return lambda s, t, p, o: inner(s, t, p, o) is None
    if isinstance(expr, sql.Logic):
        left, right = _compile(expr.left, source, text), _compile(expr.right, source, text)
        if expr.op == "AND":
            def conj(s: Sequence[Any], t: int, p: int, o: int) -> Any:
                a = left(s, t, p, o)
                if a is False:
                    return False
                b = right(s, t, p, o)
                if b is False:
                    return False
                return None if a is None or b is None else True
            return conj

        def disj(s: Sequence[Any], t: int, p: int, o: int) -> Any:
            a = left(s, t, p, o)
            if a is True:
                return True
            b = right(s, t, p, o)
            if b is True:
                return True
            return None if a is None or b is None else False
        return disj
    assert isinstance(expr, sql.Cmp)
    lhs, rhs = expr.left, expr.right
    if isinstance(rhs, sql.Lit):
        rhs = sql.Lit(_coerce_literal(rhs.value, _type_of(lhs, source), text))
    if isinstance(lhs, sql.Lit):
        lhs = sql.Lit(_coerce_literal(lhs.value, _type_of(rhs, source), text))
    left, right = _compile(lhs, source, text), _compile(rhs, source, text)
    op = _OPS[expr.op]

    def compare(s: Sequence[Any], t: int, p: int, o: int) -> Any:
        a, b = left(s, t, p, o), right(s, t, p, o)
        if a is None or b is None:
            return None
        try:
            return op(a, b)
        except TypeError:
            return None

    return compare


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


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

