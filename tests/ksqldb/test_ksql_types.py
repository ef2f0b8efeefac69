"""ksqlDB type strings to Arrow types."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lakeexportd.errors import SchemaError
from lakeexportd.ksqldb.types import parse_type

TYPE_TABLE = [
    ("BOOLEAN", pa.bool_()),
    ("INTEGER", pa.int32()),
    ("BIGINT", pa.int64()),
    ("DOUBLE", pa.float64()),
    ("DECIMAL(4, 2)", pa.decimal128(4, 2)),
    ("DECIMAL(38, 10)", pa.decimal128(38, 10)),
    ("DECIMAL(60, 5)", pa.decimal256(60, 5)),
    ("STRING", pa.string()),
    ("VARCHAR", pa.string()),
    ("BYTES", pa.binary()),
    ("DATE", pa.date32()),
    ("TIME", pa.time64("us")),
    ("TIMESTAMP", pa.timestamp("ms", tz="UTC")),
    ("ARRAY<STRING>", pa.list_(pa.string())),
    ("MAP<STRING, STRING>", pa.map_(pa.string(), pa.string())),
    ("MAP<STRING, ARRAY<STRING>>", pa.map_(pa.string(), pa.list_(pa.string()))),
    ("STRUCT<`F1` STRING, `F2` INTEGER>", pa.struct([("F1", pa.string()), ("F2", pa.int32())])),
    ("STRUCT<`F1` ARRAY<STRING>>", pa.struct([("F1", pa.list_(pa.string()))])),
    ("STRUCT< >", pa.struct([])),
    (
        "ARRAY<STRUCT<`A` MAP<STRING, DECIMAL(10, 2)>, `B` ARRAY<ARRAY<TIMESTAMP>>>>",
        pa.list_(
            pa.struct(
                [
                    ("A", pa.map_(pa.string(), pa.decimal128(10, 2))),
                    ("B", pa.list_(pa.list_(pa.timestamp("ms", tz="UTC")))),
                ]
            )
        ),
    ),
]


@pytest.mark.parametrize(("text", "arrow"), TYPE_TABLE)
def test_every_type_maps_to_its_arrow_type(text: str, arrow: pa.DataType) -> None:
    """Each ksqlDB type string of the header maps to the Arrow type of DESIGN.md section 6."""
    assert parse_type(text).arrow == arrow


@pytest.mark.parametrize(
    "text",
    [
        "DECIMAL(4, 2)",
        "ARRAY<STRING>",
        "MAP<STRING, ARRAY<STRING>>",
        "STRUCT<`F1` STRING, `F2` INTEGER>",
        "STRUCT< >",
        "STRUCT<`we``ird` BIGINT>",
    ],
)
def test_type_strings_round_trip_as_ksqldb_writes_them(text: str) -> None:
    """str() of a parsed type gives back ksqlDB's exact columnTypes spelling."""
    assert str(parse_type(text)) == text


def test_unquoted_struct_field_names_are_upper_cased_like_ksqldb() -> None:
    """DDL-style unquoted struct field names follow ksqlDB's upper-casing."""
    assert parse_type("STRUCT<city STRING>").fields[0][0] == "CITY"


@pytest.mark.parametrize(
    "text",
    ["FOO", "DECIMAL(4)", "ARRAY<>", "MAP<STRING>", "DECIMAL(2, 4)", "ARRAY<INT", "STRING X"],
)
def test_unsupported_type_names_the_column_and_the_type(text: str) -> None:
    """An unknown or malformed type string is a SchemaError naming feed, column and type."""
    with pytest.raises(SchemaError) as info:
        parse_type(text, column="PAYLOAD", feed="orders")
    message = str(info.value)
    assert "feed 'orders'" in message and "PAYLOAD" in message and repr(text) in message
