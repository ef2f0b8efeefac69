"""Block-wise row decoding: the native fast path agrees with the exact path, bad rows raise."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lakeexportd.errors import (
    FeedError,
    KsqlDBProtocolError,
    RejectedValueError,
    TransientError,
)
from lakeexportd.ksqldb.decode import RowDecoder
from lakeexportd.ksqldb.types import parse_type

FLAT = [
    ("ID", "STRING"),
    ("N", "INTEGER"),
    ("BIG", "BIGINT"),
    ("AMOUNT", "DECIMAL(10, 2)"),
    ("WIDE", "DECIMAL(38, 10)"),
    ("X", "DOUBLE"),
    ("OK", "BOOLEAN"),
    ("TS", "TIMESTAMP"),
    ("D", "DATE"),
    ("T", "TIME"),
    ("B", "BYTES"),
]


def decoder(columns: list[tuple[str, str]] = FLAT) -> RowDecoder:
    return RowDecoder([n for n, _ in columns], [parse_type(t) for _, t in columns])


def lines(*rows: str) -> bytes:
    return "".join(r + "\n" for r in rows).encode()


ROW_A = (
    '["a",1,9223372036854775807,12.50,1234567890123456789012345678.0123456789,1.0E7,true,'
    '"1999-11-30T11:00:00.000","2020-02-29","00:00","ew=="]'
)
ROW_B = "[null,null,null,null,null,null,null,null,null,null,null]"
ROW_C = (
    '["null",-2147483648,-1,-0.01,0.0000000001,"NaN",false,'
    '"1970-01-01T00:00:00.001","1969-12-31","23:59:59","AAEC"]'
)


def test_fast_path_decodes_every_flat_type_exactly() -> None:
    """A clean flat block takes the native path and keeps every value and type exactly."""
    d = decoder()
    table = d.decode(lines(ROW_A, ROW_B, ROW_C))
    assert d.fast_rows == 3 and d.exact_rows == 0
    assert table.schema == d.schema
    a, b, c = table.to_pylist()
    assert a["BIG"] == 2**63 - 1
    assert a["WIDE"] == Decimal("1234567890123456789012345678.0123456789")
    assert a["AMOUNT"] == Decimal("12.50") and a["X"] == 1.0e7
    assert a["TS"] == dt.datetime(1999, 11, 30, 11, tzinfo=dt.UTC)
    assert a["D"] == dt.date(2020, 2, 29) and a["T"] == dt.time(0, 0) and a["B"] == b"{"
    assert all(v is None for v in b.values())
    assert c["ID"] == "null" and c["N"] == -(2**31) and c["X"] != c["X"]
    assert c["T"] == dt.time(23, 59, 59) and c["B"] == b"\x00\x01\x02"


def test_fast_and_exact_paths_agree_on_random_rows() -> None:
    """For random flat rows the native path and the exact path produce equal tables."""
    rng = random.Random(7)
    choices = [
        ['"id,1"', '""', '"été ✓"', "null", '"a b"', '"{x}"'],
        [str(rng.randint(-(2**31), 2**31 - 1)) for _ in range(20)] + ["null"],
        [str(rng.randint(-(2**63), 2**63 - 1)) for _ in range(20)] + ["null"],
        ["0.00", "-12.34", "99999999.99", "null", "7.10"],
        ["0.0000000001", "-1.5", "null", "1234567890123456789012345678.0123456789"],
        ["1.5", "-0.0", "1.0E-5", "1.23456789E8", "null", '"NaN"', '"Infinity"'],
        ["true", "false", "null"],
        ['"2024-01-01T10:00:00.123"', '"1969-12-31T23:59:59.999"', "null"],
        ['"2024-02-29"', "null"],
        ['"10:00"', '"10:00:01"', "null"],
        ['"AAEC"', '""', "null"],
    ]
    rows = ["[" + ",".join(rng.choice(c) for c in choices) + "]" for _ in range(3000)]
    block = lines(*rows)
    fast = decoder()
    exact = decoder()
    fast_table = fast.decode(block)
    exact_table = exact.decode_exact(block.split(b"\n")[:-1], 1)
    assert fast.fast_rows == 3000 and exact.exact_rows == 3000
    assert fast_table.schema == exact_table.schema
    for name in fast_table.column_names:
        a, b = fast_table.column(name), exact_table.column(name)
        if pa.types.is_floating(a.type):  # NaN != NaN: compare NaN positions, then the rest
            assert pc.is_nan(a).equals(pc.is_nan(b))
            a, b = pc.if_else(pc.is_nan(a), 0.0, a), pc.if_else(pc.is_nan(b), 0.0, b)
        assert a.equals(b), name


def test_rows_with_json_escapes_take_the_json_path_and_keep_order() -> None:
    """Lines holding backslashes are decoded by msgspec and put back in their place."""
    d = decoder([("S", "STRING"), ("N", "INTEGER")])
    rows = ['["plain",1]', '["tab\\there \\"q\\" \\u00e9",2]', '["x",3]', '["y",4]', '["z",5]']
    table = d.decode(lines(*rows))
    assert table.column("S").to_pylist() == ["plain", 'tab\there "q" é', "x", "y", "z"]
    assert table.column("N").to_pylist() == [1, 2, 3, 4, 5]
    assert d.json_rows == 1 and d.fast_rows == 4 and d.exact_rows == 0


def test_nested_schema_decodes_exactly() -> None:
    """ARRAY, MAP and STRUCT columns are decoded by the exact path with nested nulls."""
    cols = [
        ("P", "STRUCT<`CARD` STRING, `ITEMS` ARRAY<STRUCT<`SKU` STRING, `PRICE` DECIMAL(6, 2)>>>"),
        ("M", "MAP<STRING, ARRAY<INTEGER>>"),
    ]
    d = decoder(cols)
    block = lines(
        '[{"CARD":"1234","ITEMS":[{"SKU":"a","PRICE":1.1},null]},{"k":[1,null]}]',
        "[null,null]",
    )
    first, second = d.decode(block).to_pylist()
    assert first["P"]["ITEMS"][0] == {"SKU": "a", "PRICE": Decimal("1.10")}
    assert first["P"]["ITEMS"][1] is None and first["M"] == [("k", [1, None])]
    assert second == {"P": None, "M": None}


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ('["a",1]', "has 2 values but the header declares 3"),
        ('["a",1,2,3]', "has 4 values"),
        ("not json", "not valid JSON"),
        ('{"a":1}', "not a JSON array"),
        ('["a",bogus,2]', "not valid JSON"),
        ("[bare,1,2]", "not valid JSON"),
        ('["a","1",2]', "column N (INTEGER)"),
        ('["a",4294967296,2]', "does not fit in INTEGER"),
        ("", "not valid JSON"),
    ],
)
def test_malformed_rows_raise_naming_row_and_column(row: str, error: str) -> None:
    """Malformed lines never slip through the fast path: the error names the row."""
    d = decoder([("S", "STRING"), ("N", "INTEGER"), ("AMOUNT", "DECIMAL(4, 0)")])
    block = lines('["ok",1,2]', row, '["ok",3,4]')
    with pytest.raises(KsqlDBProtocolError, match="row 12") as info:
        d.decode(block, first_row=11)
    assert error in str(info.value)


@pytest.mark.parametrize("row", ["[word,5]", '["ok","5"]', '["ok",true]', "[12,5]"])
def test_tokens_of_the_wrong_json_kind_are_caught_by_the_quote_count(row: str) -> None:
    """A bare token in a string column or a quoted one in a numeric column is not accepted."""
    d = decoder([("S", "STRING"), ("N", "INTEGER")])
    with pytest.raises(KsqlDBProtocolError, match="row 2"):
        d.decode(lines('["ok",1]', row))


def test_empty_block_gives_an_empty_table_with_the_schema() -> None:
    """No rows still yields the typed schema."""
    d = decoder()
    table = d.decode(b"")
    assert table.num_rows == 0 and table.schema == d.schema


def test_header_with_mismatched_names_and_types_is_rejected() -> None:
    """columnNames and columnTypes of different lengths are a protocol error."""
    with pytest.raises(KsqlDBProtocolError, match="2 columnNames but 1 columnTypes"):
        RowDecoder(["A", "B"], [parse_type("STRING")])


def test_schema_carries_ksql_types_in_field_metadata() -> None:
    """Each Arrow field remembers its ksqlDB type for _metadata.json."""
    d = decoder([("AMOUNT", "DECIMAL(10, 2)")])
    field = d.schema.field("AMOUNT")
    assert field.type == pa.decimal128(10, 2)
    assert field.metadata == {b"ksql_type": b"DECIMAL(10, 2)"}


WIDE_EDGES = [
    "9999999999999999999999999999.9999999999",
    "-9999999999999999999999999999.9999999999",
    "0.0000000000",
    "0.0000000001",
    "-0.0000000001",
]


def test_wide_decimals_keep_every_digit_on_the_fast_and_exact_paths() -> None:
    """DECIMAL(38, 10) at its edges survives both paths digit for digit; so does decimal256."""
    d = decoder([("W", "DECIMAL(38, 10)")])
    block = lines(*(f"[{v}]" for v in WIDE_EDGES))
    fast = d.decode(block)
    exact = d.decode_exact(block.split(b"\n")[:-1], 1)
    assert d.fast_rows == len(WIDE_EDGES)
    for table in (fast, exact):
        assert [f"{v:f}" for v in table.column("W").to_pylist()] == WIDE_EDGES
    huge = "9" * 56 + "." + "9" * 20
    d256 = decoder([("H", "DECIMAL(76, 20)")])
    values = d256.decode(lines(f"[{huge}]", f"[-{huge}]", "[0.00000000000000000001]"))
    assert d256.fast_rows == 3  # read as text by the CSV reader, cast exactly
    assert [f"{v:f}" for v in values.column("H").to_pylist()] == [
        huge, "-" + huge, "0.00000000000000000001"
    ]


@pytest.mark.parametrize("value", ["123.1", "-100", "1.234"])
def test_decimal_too_wide_for_its_type_is_refused_not_stored(value: str) -> None:
    """The CSV reader checks the scale but not the precision: the decoder checks both. Such a
    value is the source's problem (a feed error naming row, column and value), not the wire's."""
    d = decoder([("A", "DECIMAL(4, 2)")])
    with pytest.raises(RejectedValueError, match=f"row 2, column A.*{value} does not fit") as info:
        d.decode(lines("[1.00]", f"[{value}]"))
    assert isinstance(info.value, FeedError) and not isinstance(info.value, TransientError)
    assert (info.value.column, info.value.value, info.value.row) == ("A", value, 2)


@pytest.mark.parametrize(
    ("cols", "row", "value"),
    [
        ([("ROWTIME", "BIGINT"), ("S", "STRUCT<`AMT` DECIMAL(38, 10)>")],
         '[1700000000123,{"AMT":1.0E28}]', "1.0E+28"),
        ([("ROWTIME", "BIGINT"), ("S", "STRUCT<`AMT` DECIMAL(12, 2)>")],
         '[1700000000123,{"AMT":1.234}]', "1.234"),
        ([("ROWTIME", "BIGINT"), ("L", "ARRAY<DECIMAL(38, 10)>")],
         '[1700000000123,[1,99999999999999999999999999999.9999999999]]',
         "99999999999999999999999999999.9999999999"),
        ([("ROWTIME", "BIGINT"), ("M", "MAP<STRING, DECIMAL(4, 2)>")],
         '[1700000000123,{"k":0.001}]', "0.001"),
        ([("ROWTIME", "BIGINT"), ("W", "DECIMAL(38, 10)")],
         '[1700000000123,1.00000000001]', "1.00000000001"),
        # 2**127 and more: Arrow's decimal128 text parse wraps around silently.
        ([("ROWTIME", "BIGINT"), ("S", "STRUCT<`N` DECIMAL(38, 0)>")],
         '[1700000000123,{"N":1.0E39}]', "1.0E+39"),
        ([("ROWTIME", "BIGINT"), ("M", "MAP<STRING, DECIMAL(38, 0)>")],
         f'[1700000000123,{{"k":{"9" * 39}}}]', "9" * 39),
        ([("ROWTIME", "BIGINT"), ("W", "DECIMAL(38, 0)")], f'[1700000000123,{"9" * 39}]', "9" * 39),
        ([("ROWTIME", "BIGINT"), ("W", "DECIMAL(76, 0)")], f'[1700000000123,{"6" * 77}]', "6" * 77),
    ],
)
def test_a_decimal_that_cannot_be_kept_names_rowtime_column_and_value(
    cols: list[tuple[str, str]], row: str, value: str
) -> None:
    """On every path (CSV, typed JSON, exact), at any depth: refused, never rounded."""
    d = decoder(cols)
    with pytest.raises(RejectedValueError) as info:
        d.decode(lines(f"[1700000000000,{'null' if len(cols) else ''}]", row), first_row=1)
    error = info.value.for_feed("wide")
    assert (error.rowtime, error.column, error.row) == (1700000000123, cols[1][0], 2)
    assert value in str(error) and "feed 'wide'" in str(error)
    assert "ROWTIME 1700000000123" in str(error) and "never rounds" in str(error)
