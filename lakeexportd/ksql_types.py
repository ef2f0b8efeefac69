"""ksqlDB column types: parse the type strings of a query header and map them to Arrow.

Pure: no I/O. ``parse_type`` reads the strings ksqlDB puts in ``columnTypes``
(``DECIMAL(10, 2)``, ``MAP<STRING, ARRAY<INTEGER>>``, ``STRUCT<`F1` STRING>`` ...),
``KsqlType.arrow`` gives the Arrow type of DESIGN.md section 6, and ``value_converter``
builds the exact converter from a JSON value (as ``json.loads(..., parse_float=Decimal)``
returns it) to the Python value ``pyarrow.array`` takes for that Arrow type.

Value forms accepted (reference section 4): at top level ksqlDB writes TIMESTAMP, DATE and TIME
as strings; inside a STRUCT it writes them as numbers (epoch millis, epoch days, millis of day)
and DECIMAL after a trip through a double. Every converter accepts both forms.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation
from typing import Any

import pyarrow as pa

from lakeexportd.errors import SchemaError

PRIMITIVES = (
    "BOOLEAN",
    "INTEGER",
    "BIGINT",
    "DOUBLE",
    "STRING",
    "BYTES",
    "TIMESTAMP",
    "DATE",
    "TIME",
)
_ALIASES = {"INT": "INTEGER", "VARCHAR": "STRING"}
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_EPOCH_DATE = dt.date(1970, 1, 1)
_MS_PER_DAY = 86_400_000
_MAX_DECIMAL_PRECISION = 76  # decimal256; ksqlDB itself rarely goes past 38
# The default context keeps 28 digits: too few for DECIMAL(38, s) and wider.
_WIDE = Context(prec=_MAX_DECIMAL_PRECISION + 4)


@dataclass(frozen=True)
class KsqlType:
    """One ksqlDB SQL type, nested types included."""

    base: str
    precision: int | None = None
    scale: int | None = None
    element: KsqlType | None = None  # ARRAY element, MAP value
    key: KsqlType | None = None  # MAP key
    fields: tuple[tuple[str, KsqlType], ...] = ()

    def __str__(self) -> str:
        """The type as ksqlDB writes it in ``columnTypes`` (struct names back-quoted)."""
        if self.base == "DECIMAL":
            return f"DECIMAL({self.precision}, {self.scale})"
        if self.base == "ARRAY":
            return f"ARRAY<{self.element}>"
        if self.base == "MAP":
            return f"MAP<{self.key}, {self.element}>"
        if self.base == "STRUCT":
            if not self.fields:
                return "STRUCT< >"
            inner = ", ".join(f"`{n.replace('`', '``')}` {t}" for n, t in self.fields)
            return f"STRUCT<{inner}>"
        return self.base

    @property
    def is_nested(self) -> bool:
        return self.base in ("ARRAY", "MAP", "STRUCT")

    @property
    def arrow(self) -> pa.DataType:
        """The Arrow type of DESIGN.md section 6."""
        return _arrow_type(self)


def _arrow_type(t: KsqlType) -> pa.DataType:
    simple: dict[str, pa.DataType] = {
        "BOOLEAN": pa.bool_(),
        "INTEGER": pa.int32(),
        "BIGINT": pa.int64(),
        "DOUBLE": pa.float64(),
        "STRING": pa.string(),
        "BYTES": pa.binary(),
        "TIMESTAMP": pa.timestamp("ms", tz="UTC"),
        "DATE": pa.date32(),
        "TIME": pa.time32("ms"),
    }
    if t.base in simple:
        return simple[t.base]
    if t.base == "DECIMAL":
        assert t.precision is not None and t.scale is not None
        if t.precision <= 38:
            return pa.decimal128(t.precision, t.scale)
        return pa.decimal256(t.precision, t.scale)
    if t.base == "ARRAY":
        assert t.element is not None
        return pa.list_(t.element.arrow)
    if t.base == "MAP":
        assert t.key is not None and t.element is not None
        return pa.map_(t.key.arrow, t.element.arrow)
    return pa.struct([pa.field(name, ft.arrow) for name, ft in t.fields])


# -- parsing ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(`(?:[^`]|``)*`)|([A-Za-z_][A-Za-z0-9_]*)|(\d+)|([<>(),]))")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[str] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise ValueError(f"unexpected character {text[pos:].strip()[:1]!r}")
            self.tokens.append(next(g for g in m.groups() if g is not None))
            pos = m.end()
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None:
            raise ValueError("type ends too early")
        if expected is not None and tok.upper() != expected:
            raise ValueError(f"expected {expected!r}, found {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> KsqlType:
        name = self.take().upper()
        name = _ALIASES.get(name, name)
        if name in PRIMITIVES:
            return KsqlType(name)
        if name == "DECIMAL":
            self.take("(")
            precision = int(self.take())
            self.take(",")
            scale = int(self.take())
            self.take(")")
            if not 1 <= precision <= _MAX_DECIMAL_PRECISION or not 0 <= scale <= precision:
                raise ValueError(
                    f"DECIMAL({precision}, {scale}) is out of range: precision must be 1.."
                    f"{_MAX_DECIMAL_PRECISION} and scale 0..precision"
                )
            return KsqlType("DECIMAL", precision=precision, scale=scale)
        if name == "ARRAY":
            self.take("<")
            element = self.parse()
            self.take(">")
            return KsqlType("ARRAY", element=element)
        if name == "MAP":
            self.take("<")
            key = self.parse()
            self.take(",")
            value = self.parse()
            self.take(">")
            if key.is_nested:
                raise ValueError(f"MAP keys must be primitive, not {key}")
            return KsqlType("MAP", key=key, element=value)
        if name == "STRUCT":
            self.take("<")
            fields: list[tuple[str, KsqlType]] = []
            while self.peek() != ">":
                if fields:
                    self.take(",")
                raw = self.take()
                field = raw[1:-1].replace("``", "`") if raw.startswith("`") else raw.upper()
                fields.append((field, self.parse()))
            self.take(">")
            names = [n for n, _ in fields]
            if len(set(names)) != len(names):
                raise ValueError("STRUCT has duplicate field names")
            return KsqlType("STRUCT", fields=tuple(fields))
        raise ValueError(f"unknown type name {name!r}")


def parse_type(text: str, *, column: str = "?", feed: str | None = None) -> KsqlType:
    """Parse one ksqlDB type string; an unsupported one is a ``SchemaError`` naming the column."""
    try:
        parser = _Parser(text)
        result = parser.parse()
        if parser.peek() is not None:
            raise ValueError(f"unexpected {parser.peek()!r} after the type")
        return result
    except (ValueError, IndexError) as exc:
        where = f"feed {feed!r}: " if feed else ""
        raise SchemaError(
            f"{where}column {column} has ksqlDB type {text!r}, which lakeexportd cannot map "
            f"to Arrow ({exc}); supported: {', '.join(PRIMITIVES)}, DECIMAL(p, s), ARRAY<T>, "
            f"MAP<K, V>, STRUCT<...>"
        ) from exc


def arrow_schema(
    names: list[str], types: list[KsqlType], *, metadata: dict[str, str] | None = None
) -> pa.Schema:
    """Arrow schema of a query result; each field carries its ksqlDB type in metadata."""
    return pa.schema(
        [pa.field(n, t.arrow, metadata={"ksql_type": str(t)}) for n, t in zip(names, types)],
        metadata=metadata,
    )


# -- exact value conversion ------------------------------------------------------------------

Converter = Callable[[Any], Any]


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


def _time(v: Any) -> int:
    if type(v) is int:
        if not 0 <= v < _MS_PER_DAY:
            raise ValueError(f"{v} is not a millisecond of the day")
        return v
    if isinstance(v, str):
        return parse_time_ms(v)
    raise ValueError(f"expected a TIME, got {v!r}")


def _decimal(precision: int, scale: int) -> Converter:
    quantum = Decimal(1).scaleb(-scale)
    limit = Decimal(10) ** (precision - scale)

    def convert(v: Any) -> Decimal:
        if type(v) is int:
            v = Decimal(v)
        elif not isinstance(v, Decimal):
            raise ValueError(f"expected a DECIMAL({precision}, {scale}), got {v!r}")
        try:
            exact: Decimal = v.quantize(quantum, context=_WIDE)
        except InvalidOperation as exc:
            raise ValueError(f"{v} does not fit in DECIMAL({precision}, {scale})") from exc
        if exact != v or abs(exact) >= limit:
            raise ValueError(f"{v} does not fit in DECIMAL({precision}, {scale}) without loss")
        return exact

    return convert


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
        base = _time
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
