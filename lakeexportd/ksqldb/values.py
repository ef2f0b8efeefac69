"""Exact conversion of ksqlDB row values (as ``json.loads(..., parse_float=Decimal)`` returns
them) to the Python values ``pyarrow.array`` takes for the column's Arrow type.

Pure. Value forms accepted (wire reference section 4): at top level ksqlDB writes TIMESTAMP,
DATE and TIME as strings; inside a STRUCT it writes them as numbers (epoch millis, epoch days,
millis of day) and DECIMAL after a trip through a double. Every converter accepts both forms.
Nothing goes through a float except DOUBLE itself.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Callable
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

from lakeexportd.ksqldb.types import MAX_DECIMAL_PRECISION, KsqlType

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_EPOCH_DATE = dt.date(1970, 1, 1)
_MS_PER_DAY = 86_400_000
# The default context keeps 28 digits: too few for DECIMAL(38, s) and wider. This one holds
# any DECIMAL ksql_types accepts and traps rounding, so a value is kept exactly or refused.
_EXACT = Context(prec=MAX_DECIMAL_PRECISION + 4, traps=[Inexact, InvalidOperation])

Converter = Callable[[Any], Any]


class RejectedValue(ValueError):
    """A well-formed value the column's type cannot hold exactly (a DECIMAL that would need
    rounding or more digits): the source's data, not the wire, is at fault."""

    def __init__(self, message: str, value: Any) -> None:
        super().__init__(message)
        self.value = value  # the value itself, wherever it sits in a nested one


def parse_timestamp_ms(text: str) -> int:
    """``yyyy-MM-ddTHH:mm:ss.SSS`` (UTC when no offset is given) to epoch milliseconds."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


_TIME = re.compile(r"(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?")


def parse_time_ms(text: str) -> int:
    """``HH:mm``, ``HH:mm:ss`` or ``HH:mm:ss.SSS`` to milliseconds of the day."""
    m = _TIME.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not a TIME (HH:mm[:ss[.SSS]])")
    hours, minutes, seconds = int(m[1]), int(m[2]), int(m[3] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"{text!r} is not a valid time of day")
    millis = int((m[4] or "0")[:3].ljust(3, "0"))
    return ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis


def parse_date_days(text: str) -> int:
    """``yyyy-MM-dd`` to days since 1970-01-01."""
    return (dt.date.fromisoformat(text) - _EPOCH_DATE).days


def _int_in(bounds: tuple[int, int], name: str) -> Converter:
    low, high = bounds

    def convert(v: Any) -> int:
        if type(v) is not int:
            raise ValueError(f"expected an {name}, got {v!r}")
        if not low <= v <= high:
            raise ValueError(f"{v} does not fit in {name}")
        return v

    return convert


def _boolean(v: Any) -> bool:
    if type(v) is not bool:
        raise ValueError(f"expected true or false, got {v!r}")
    return v


_SPECIAL_DOUBLES = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _double(v: Any) -> float:
    if isinstance(v, Decimal) or type(v) is int:
        return float(v)
    if isinstance(v, str) and v in _SPECIAL_DOUBLES:
        return _SPECIAL_DOUBLES[v]
    raise ValueError(f"expected a DOUBLE, got {v!r}")


def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    return v


def _bytes(v: Any) -> bytes:
    if not isinstance(v, str):
        raise ValueError(f"expected base64 text for BYTES, got {v!r}")
    try:
        return base64.b64decode(v, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{v[:40]!r} is not valid base64 ({exc})") from exc


def _timestamp(v: Any) -> int:
    if type(v) is int:
        return v
    if isinstance(v, str):
        return parse_timestamp_ms(v)
    raise ValueError(f"expected a TIMESTAMP, got {v!r}")


def _date(v: Any) -> int:
    if type(v) is int:
        return v
    if isinstance(v, str):
        return parse_date_days(v)
    raise ValueError(f"expected a DATE, got {v!r}")


def _time(per_ms: int) -> Converter:
    """Milliseconds of the day (a number, or text) to the unit of the column's Arrow type."""

    def convert(v: Any) -> int:
        if type(v) is int:
            if not 0 <= v < _MS_PER_DAY:
                raise ValueError(f"{v} is not a millisecond of the day")
            return v * per_ms
        if isinstance(v, str):
            return parse_time_ms(v) * per_ms
        raise ValueError(f"expected a TIME, got {v!r}")

    return convert


def _decimal(precision: int, scale: int) -> Converter:
    """Exact at any precision: nothing here rounds. ``abs`` or arithmetic would round to the
    default context's 28 digits; ``quantize`` runs in ``_EXACT``, which is wide enough for 76
    digits and raises instead of rounding, and comparisons are exact."""
    quantum = Decimal(1).scaleb(-scale)
    limit = Decimal(10) ** (precision - scale)  # one digit: exact in any context

    def convert(v: Any) -> Decimal:
        if type(v) is int:
            v = Decimal(v)
        elif not isinstance(v, Decimal):
            raise ValueError(f"expected a DECIMAL({precision}, {scale}), got {v!r}")
        if not v.is_finite():
            raise ValueError(f"{v} is not a DECIMAL({precision}, {scale}) value")
        try:
            exact: Decimal = v.quantize(quantum, context=_EXACT)
        except ArithmeticError as exc:  # Inexact (would round) or InvalidOperation (too long)
            raise RejectedValue(_does_not_fit(v, precision, scale), v) from exc
        if not -limit < exact < limit:
            raise RejectedValue(_does_not_fit(v, precision, scale), v)
        return exact

    return convert


def _does_not_fit(v: Decimal, precision: int, scale: int) -> str:
    return (
        f"{v} does not fit in DECIMAL({precision}, {scale}) without rounding: "
        f"at most {precision - scale} digits before the point and {scale} after it"
    )


def _key_from_text(t: KsqlType) -> Converter:
    """JSON object keys are always text; ksqlDB writes non-string keys with ``toString()``."""
    inner = value_converter(t)
    if t.base == "STRING":
        return inner
    if t.base in ("INTEGER", "BIGINT"):
        return lambda k: inner(int(k))
    if t.base == "BOOLEAN":
        return lambda k: {"true": True, "false": False}[k]
    if t.base in ("DOUBLE", "DECIMAL"):
        return lambda k: inner(Decimal(k))
    return inner  # TIMESTAMP/DATE/TIME/BYTES keys arrive in their text form


def value_converter(t: KsqlType) -> Converter:
    """Build the exact converter for one column: JSON value in, ``pyarrow.array`` input out."""
    base: Converter
    if t.base == "BOOLEAN":
        base = _boolean
    elif t.base == "INTEGER":
        base = _int_in(_INT32, "INTEGER")
    elif t.base == "BIGINT":
        base = _int_in(_INT64, "BIGINT")
    elif t.base == "DOUBLE":
        base = _double
    elif t.base == "STRING":
        base = _string
    elif t.base == "BYTES":
        base = _bytes
    elif t.base == "TIMESTAMP":
        base = _timestamp
    elif t.base == "DATE":
        base = _date
    elif t.base == "TIME":
        base = _time({"ms": 1, "us": 1000, "ns": 1_000_000}[t.arrow.unit])
    elif t.base == "DECIMAL":
        assert t.precision is not None and t.scale is not None
        base = _decimal(t.precision, t.scale)
    elif t.base == "ARRAY":
        assert t.element is not None
        base = _array(value_converter(t.element))
    elif t.base == "MAP":
        assert t.key is not None and t.element is not None
        base = _map(_key_from_text(t.key), value_converter(t.element))
    else:
        base = _struct({name: value_converter(ft) for name, ft in t.fields})

    def nullable(v: Any) -> Any:
        return None if v is None else base(v)

    return nullable


def _array(element: Converter) -> Converter:
    def convert(v: Any) -> list[Any]:
        if not isinstance(v, list):
            raise ValueError(f"expected an ARRAY, got {v!r}")
        return [element(e) for e in v]

    return convert


def _map(key: Converter, value: Converter) -> Converter:
    def convert(v: Any) -> list[tuple[Any, Any]]:
        if not isinstance(v, dict):
            raise ValueError(f"expected a MAP object, got {v!r}")
        return [(key(k), value(x)) for k, x in v.items()]

    return convert


def _struct(fields: dict[str, Converter]) -> Converter:
    def convert(v: Any) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise ValueError(f"expected a STRUCT object, got {v!r}")
        unknown = v.keys() - fields.keys()
        if unknown:
            raise ValueError(f"STRUCT has unknown fields {sorted(unknown)}")
        return {name: conv(v.get(name)) for name, conv in fields.items()}

    return convert
