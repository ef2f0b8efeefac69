"""WHERE clauses compiled to closures over (stored row, ROWTIME, partition, offset).

SQL three-valued logic: a comparison with NULL is unknown (None), and only True passes.
TIMESTAMP, DATE and TIME columns (and ROWTIME) compare with ISO string literals, as in ksqlDB.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from lakeexportd.sandbox import syntax
from lakeexportd.sandbox.errors import KsqlError, bad_statement
from lakeexportd.sandbox.sources import Source
from lakeexportd.sandbox.sqltypes import SqlType

# stored row, ROWTIME, partition, offset
Getter = Callable[[Sequence[Any], int, int, int], Any]
Predicate = Callable[[Sequence[Any], int, int, int], bool]

_EPOCH_DATE = dt.date(1970, 1, 1)
PSEUDO = {
    "ROWTIME": SqlType("BIGINT"),
    "ROWPARTITION": SqlType("INTEGER"),
    "ROWOFFSET": SqlType("BIGINT"),
}
PSEUDO_GETTERS: dict[str, Getter] = {
    "ROWTIME": lambda s, t, p, o: t,
    "ROWPARTITION": lambda s, t, p, o: p,
    "ROWOFFSET": lambda s, t, p, o: o,
}


def _millis_of_day(time: dt.time) -> int:
    if time.tzinfo is not None:
        raise ValueError("a TIME has no time zone")
    seconds = (time.hour * 60 + time.minute) * 60 + time.second
    return seconds * 1000 + time.microsecond // 1000


def statement_error(message: str, text: str) -> KsqlError:
    """A 40001 whose message carries ksqlDB's "\\nStatement: <sql>" suffix."""
    return bad_statement(f"{message}\nStatement: {text}", text)


def column_getter(read: Callable[[Sequence[Any]], Any]) -> Getter:
    return lambda s, t, p, o: read(s)


def compile_where(expr: syntax.Expr, source: Source, text: str) -> Predicate:
    compiled = _compile(expr, source, text)
    return lambda s, t, p, o: compiled(s, t, p, o) is True


def _type_of(expr: syntax.Expr, source: Source) -> SqlType | None:
    if isinstance(expr, syntax.Col):
        if expr.name in PSEUDO:
            return PSEUDO[expr.name]
        column = source.column(expr.name)
        return column.type if column else None
    return None


def _coerce_literal(value: Any, target: SqlType | None, text: str) -> Any:
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
            return (dt.date.fromisoformat(value) - _EPOCH_DATE).days
        if target.base == "TIME":
            return _millis_of_day(dt.time.fromisoformat(value))
    except ValueError as exc:
        raise statement_error(f"Failed to parse literal '{value}': {exc}", text) from exc
    if target.base != "STRING":
        raise statement_error(f"Cannot compare {target} to STRING literal '{value}'", text)
    return value


def _compile(expr: syntax.Expr, source: Source, text: str) -> Getter:
    if isinstance(expr, syntax.Lit):
        value = expr.value
        return lambda s, t, p, o: value
    if isinstance(expr, syntax.Col):
        if expr.name in PSEUDO_GETTERS:
            return PSEUDO_GETTERS[expr.name]
        column = source.column(expr.name)
        if column is None:
            raise statement_error(f"WHERE column '{expr.name}' cannot be resolved.", text)
        return column_getter(column.read)
    if isinstance(expr, syntax.Not):
        inner = _compile(expr.operand, source, text)

        def negate(s: Sequence[Any], t: int, p: int, o: int) -> Any:
            v = inner(s, t, p, o)
            return None if v is None else not v

        return negate
    if isinstance(expr, syntax.IsNull):
        inner = _compile(expr.operand, source, text)
        if expr.negated:
            return lambda s, t, p, o: inner(s, t, p, o) is not None
        return lambda s, t, p, o: inner(s, t, p, o) is None
    if isinstance(expr, syntax.Logic):
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
    assert isinstance(expr, syntax.Cmp)
    lhs, rhs = expr.left, expr.right
    if isinstance(rhs, syntax.Lit):
        rhs = syntax.Lit(_coerce_literal(rhs.value, _type_of(lhs, source), text))
    if isinstance(lhs, syntax.Lit):
        lhs = syntax.Lit(_coerce_literal(lhs.value, _type_of(rhs, source), text))
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
