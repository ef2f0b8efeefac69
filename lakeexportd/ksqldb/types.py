"""ksqlDB column types: parse the type strings of a query header and map them to Arrow.

Pure: no I/O. ``parse_type`` reads the strings ksqlDB puts in ``columnTypes``
(``DECIMAL(10, 2)``, ``MAP<STRING, ARRAY<INTEGER>>``, ``STRUCT<`F1` STRING>`` ...) and
``KsqlType.arrow`` gives the Arrow type of DESIGN.md section 6. Converting the values of a row
exactly is ``ksql_values``'s job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
MAX_DECIMAL_PRECISION = 76  # decimal256; ksqlDB itself rarely goes past 38


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
        # Parquet TIME(MICROS): Spark cannot read TIME(MILLIS) at all (README, design notes).
        "TIME": pa.time64("us"),
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
            if not 1 <= precision <= MAX_DECIMAL_PRECISION or not 0 <= scale <= precision:
                raise ValueError(
                    f"DECIMAL({precision}, {scale}) is out of range: precision must be 1.."
                    f"{MAX_DECIMAL_PRECISION} and scale 0..precision"
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
