"""ksqlDB SQL types, the server's side: read from DDL text, written as ksqlDB writes them.

The sandbox needs a type in four places: its catalog's column definitions and ALTER/admin
changes (read from text), ``columnTypes`` and ``header.schema`` (wire reference 2.5 and 3.3:
``DECIMAL(10, 2)``, ``ARRAY<STRING>``, ``MAP<STRING, INTEGER>``, ``STRUCT<`A` INTEGER>``,
``STRUCT< >``), DESCRIBE's ``SchemaInfo`` (section 5) and value formatting (section 4).
This is its own reading of the reference, not the client's type system: the sandbox is the
witness the client is tested against, and a witness that shared the client's code would agree
with the client's mistakes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PRIMITIVES = frozenset(
    ("BOOLEAN", "INTEGER", "BIGINT", "DOUBLE", "STRING", "BYTES", "TIMESTAMP", "DATE", "TIME")
)
# DDL may spell these the SQL way; ksqlDB always writes the names on the right.
_SYNONYMS = {"INT": "INTEGER", "VARCHAR": "STRING"}


class TypeSyntaxError(ValueError):
    """A type the sandbox cannot read; the message is what a 40001 answer carries."""


@dataclass(frozen=True)
class SqlType:
    """One ksqlDB type. ``member`` is an ARRAY's element or a MAP's value (DESCRIBE's
    ``memberSchema``), ``key`` a MAP's key, ``fields`` a STRUCT's (name, type) pairs."""

    base: str
    precision: int = 0
    scale: int = 0
    member: SqlType | None = None
    key: SqlType | None = None
    fields: tuple[tuple[str, SqlType], ...] = ()

    def __str__(self) -> str:
        """``SqlType.toString(FormatOptions.none())``: ``", "`` separators, field names
        always back-quoted (a back quote in one doubled), an empty STRUCT as ``STRUCT< >``."""
        if self.base == "DECIMAL":
            return f"DECIMAL({self.precision}, {self.scale})"
        if self.base == "ARRAY":
            return f"ARRAY<{self.member}>"
        if self.base == "MAP":
            return f"MAP<{self.key}, {self.member}>"
        if self.base == "STRUCT":
            inner = ", ".join(f"`{name.replace('`', '``')}` {t}" for name, t in self.fields)
            return f"STRUCT<{inner or ' '}>"
        return self.base


# A back-quoted name (a back quote inside doubled), a word or number, or one other character.
_TOKENS = re.compile(r"`(?:[^`]|``)*`|\w+|\S")


def parse(text: str) -> SqlType:
    """Read a type as written in DDL (``DECIMAL(10,2)``, ``MAP<STRING, INT>``, ...)."""
    tokens = _TOKENS.findall(text)
    tokens.reverse()  # pop() takes the next one
    result = _read(tokens, text)
    if tokens:
        raise TypeSyntaxError(f"Unexpected '{tokens[-1]}' after type {result} in '{text}'")
    return result


def _next(tokens: list[str], text: str, expected: str | None = None) -> str:
    if not tokens:
        raise TypeSyntaxError(f"Type '{text}' ends too early")
    token = tokens.pop()
    if expected is not None and token != expected:
        raise TypeSyntaxError(f"Expected '{expected}' but found '{token}' in type '{text}'")
    return token


def _read(tokens: list[str], text: str) -> SqlType:
    name = _next(tokens, text).upper()
    name = _SYNONYMS.get(name, name)
    if name in PRIMITIVES:
        return SqlType(name)
    if name == "DECIMAL":
        _next(tokens, text, "(")
        precision = _number(tokens, text)
        _next(tokens, text, ",")
        scale = _number(tokens, text)
        _next(tokens, text, ")")
        if precision < 1 or scale > precision:
            raise TypeSyntaxError(
                f"DECIMAL({precision}, {scale}): precision must be at least 1 and scale "
                "no larger than precision")
        return SqlType("DECIMAL", precision=precision, scale=scale)
    if name == "ARRAY":
        _next(tokens, text, "<")
        element = _read(tokens, text)
        _next(tokens, text, ">")
        return SqlType("ARRAY", member=element)
    if name == "MAP":
        _next(tokens, text, "<")
        key = _read(tokens, text)
        _next(tokens, text, ",")
        value = _read(tokens, text)
        _next(tokens, text, ">")
        return SqlType("MAP", key=key, member=value)
    if name == "STRUCT":
        _next(tokens, text, "<")
        fields: list[tuple[str, SqlType]] = []
        while tokens and tokens[-1] != ">":
            if fields:
                _next(tokens, text, ",")
            word = _next(tokens, text)
            # Unquoted identifiers are upper-cased, quoted ones kept as written.
            field = word[1:-1].replace("``", "`") if word.startswith("`") else word.upper()
            fields.append((field, _read(tokens, text)))
        _next(tokens, text, ">")
        return SqlType("STRUCT", fields=tuple(fields))
    # ksqlDB's SqlTypeParser words an unknown name this way (it would look up a custom type).
    raise TypeSyntaxError(f"Cannot resolve unknown type: {name}")


def _number(tokens: list[str], text: str) -> int:
    token = _next(tokens, text)
    if not token.isdecimal():
        raise TypeSyntaxError(f"Expected a number but found '{token}' in type '{text}'")
    return int(token)
