"""Value formatting: every type as ksqlDB's Jackson mapper writes it (reference section 4)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from lakeexportd.sandbox.formatting import java_double, row_formatter, value_formatter
from lakeexportd.sandbox.sqltypes import parse


@pytest.mark.parametrize(("value", "text"), [
    (234.0, "234.0"), (11.0, "11.0"), (0.5, "0.5"), (1e7, "1.0E7"), (12345678.9, "1.23456789E7"),
    (9999999.0, "9999999.0"), (0.001, "0.001"), (0.0001, "1.0E-4"), (-1.5e-5, "-1.5E-5"),
    (1e21, "1.0E21"), (123456.789, "123456.789"), (0.1 + 0.2, "0.30000000000000004"),
    (-0.0, "-0.0"), (0.0, "0.0"), (1.7976931348623157e308, "1.7976931348623157E308"),
    (float("nan"), "NaN"), (float("inf"), "Infinity"), (float("-inf"), "-Infinity"),
])
def test_java_double(value: float, text: str) -> None:
    """DOUBLE text matches Java's Double.toString, including the exponent forms."""
    assert java_double(value) == text


CASES: list[tuple[str, Any, str]] = [
    ("BOOLEAN", True, "true"),
    ("BOOLEAN", None, "null"),
    ("INTEGER", -7, "-7"),
    ("BIGINT", 9223372036854775807, "9223372036854775807"),
    ("DOUBLE", 1e7, "1.0E7"),
    ("DOUBLE", float("nan"), '"NaN"'),
    ("DOUBLE", float("-inf"), '"-Infinity"'),
    ("DECIMAL(4, 2)", Decimal("12.34"), "12.34"),
    ("DECIMAL(3, 1)", Decimal("10.0"), "10.0"),
    ("DECIMAL(2, 0)", Decimal("1E+1"), "10"),
    ("DECIMAL(10, 2)", Decimal("5"), "5.00"),
    ("DECIMAL(10, 2)", Decimal("-0.50"), "-0.50"),
    ("STRING", "São Paulo 東京", '"São Paulo 東京"'),
    ("STRING", 'a"b\\c\td\n\x01', '"a\\"b\\\\c\\td\\n\\u0001"'),
    ("BYTES", bytes([123]), '"ew=="'),
    ("BYTES", bytes([0, 1, 2]), '"AAEC"'),
    ("TIMESTAMP", 943959600000, '"1999-11-30T11:00:00.000"'),
    ("TIMESTAMP", -1, '"1969-12-31T23:59:59.999"'),
    ("DATE", 10957, '"2000-01-01"'),
    ("TIME", 0, '"00:00"'),
    ("TIME", 10_000, '"00:00:10"'),
    ("TIME", 45_296_789, '"12:34:56"'),
    ("ARRAY<TIMESTAMP>", [0, None], '["1970-01-01T00:00:00.000",null]'),
    ("MAP<STRING, DECIMAL(4, 2)>", {"a": Decimal("1.50")}, '{"a":1.50}'),
    ("STRUCT< >", {}, "{}"),
    (
        "STRUCT<`T` TIMESTAMP, `D` DATE, `TM` TIME, `DEC` DECIMAL(4, 2), `Z` DECIMAL(4, 2), "
        "`B` BYTES, `N` STRING, `x` DOUBLE>",
        {"T": 943959600000, "D": 10957, "TM": 45296789, "DEC": Decimal("1.10"),
         "Z": Decimal("0.00"), "B": b"!", "N": None, "x": 1e7},
        '{"T":943959600000,"D":10957,"TM":45296789,"DEC":1.1,"Z":0.0,"B":"IQ==","N":null,'
        '"x":1.0E7}',
    ),
    (
        "ARRAY<STRUCT<`P` DECIMAL(10, 2), `A` ARRAY<TIMESTAMP>, `M` MAP<STRING, DATE>>>",
        [{"P": Decimal("12.30"), "A": [1], "M": {"k": 1}}],
        '[{"P":12.3,"A":[1],"M":{"k":1}}]',
    ),
]


@pytest.mark.parametrize(("type_text", "value", "text"), CASES)
def test_value_formatting(type_text: str, value: Any, text: str) -> None:
    """Each type (top level and inside a STRUCT) is written byte for byte as ksqlDB writes it."""
    assert value_formatter(parse(type_text))(value) == text


def test_row_is_compact_json_array() -> None:
    """A row is a compact JSON array (no spaces), nulls kept in place."""
    fmt = row_formatter([parse("STRING"), parse("INTEGER"), parse("DOUBLE")])
    assert fmt(["x", None, 2.5]) == '["x",null,2.5]'
