"""The typed JSON path (msgspec) agrees with the row-by-row exact path on random nested rows."""

from __future__ import annotations

import math
import random
import string
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from lakeexportd.errors import KsqlDBProtocolError
from lakeexportd.ksqldb.decode import RowDecoder
from lakeexportd.ksqldb.json_block import gc_paused, times_of_day
from lakeexportd.ksqldb.types import KsqlType, parse_type
from lakeexportd.sandbox import sqltypes
from lakeexportd.sandbox.formatting import row_formatter

PRIMITIVES = ["BOOLEAN", "INTEGER", "BIGINT", "DOUBLE", "STRING", "BYTES", "TIMESTAMP", "DATE",
              "TIME", "DECIMAL"]
FIELD_NAMES = ["A", "B_2", "lower", "with space", 'q"uote', "X`Y"]


def random_type(rng: random.Random, depth: int) -> KsqlType:
    kind = rng.choice(PRIMITIVES + ["ARRAY", "MAP", "STRUCT"] * (depth > 0))
    if kind == "DECIMAL":
        precision = rng.choice([1, 4, 10, 18, 38, 39, 76])
        return KsqlType("DECIMAL", precision=precision, scale=rng.randint(0, precision))
    if kind == "ARRAY":
        return KsqlType("ARRAY", element=random_type(rng, depth - 1))
    if kind == "MAP":
        key = KsqlType(rng.choice(["STRING", "INTEGER", "BIGINT"]))
        return KsqlType("MAP", key=key, element=random_type(rng, depth - 1))
    if kind == "STRUCT":
        names = rng.sample(FIELD_NAMES, rng.randint(1, 3))
        return KsqlType("STRUCT", fields=tuple((n, random_type(rng, depth - 1)) for n in names))
    return KsqlType(kind)


def random_decimal(rng: random.Random, t: KsqlType, nested: bool) -> Decimal:
    assert t.precision is not None and t.scale is not None
    if nested:  # after a trip through a double: few digits, so the double keeps them exactly
        scale = min(t.scale, 3)
        digits = min(t.precision - t.scale, 12)
    else:
        scale, digits = t.scale, t.precision - t.scale
    edge = rng.random() < 0.3
    whole = 10**digits - 1 if edge else rng.randrange(10**digits) if digits else 0
    frac = 10**scale - 1 if edge else rng.randrange(10**scale) if scale else 0
    sign = rng.choice(["", "-"])
    text = f"{sign}{whole}.{frac:0{scale}d}" if scale else f"{sign}{whole}"
    return Decimal(text)  # from text: scaleb would round to the default context's 28 digits


def random_value(rng: random.Random, t: KsqlType, nested: bool = False) -> Any:
    """A value in the sandbox's Python forms (formatting.py); None anywhere."""
    if rng.random() < 0.15:
        return None
    base = t.base
    if base == "BOOLEAN":
        return rng.random() < 0.5
    if base == "INTEGER":
        return rng.choice([0, -(2**31), 2**31 - 1, rng.randint(-(2**31), 2**31 - 1)])
    if base == "BIGINT":
        return rng.choice([0, -(2**63), 2**63 - 1, rng.randint(-(2**63), 2**63 - 1)])
    if base == "DOUBLE":
        return rng.choice([0.0, -0.0, 1.5, 1.0e7, 1.0e-4, 123456789.125, math.inf, -math.inf,
                           math.nan, rng.uniform(-1e9, 1e9)])
    if base == "STRING":
        return "".join(rng.choice(string.printable + "é東\u0001\\\"") for _ in range(rng.randint(0, 8)))
    if base == "BYTES":
        return rng.randbytes(rng.randint(0, 6))
    if base == "TIMESTAMP":
        return rng.randint(-2_000_000_000_000, 4_000_000_000_000)
    if base == "DATE":
        return rng.randint(-20_000, 50_000)
    if base == "TIME":
        return rng.choice([0, 60_000, 86_399_999, rng.randrange(86_400_000)])
    if base == "DECIMAL":
        return random_decimal(rng, t, nested)
    if base == "ARRAY":
        assert t.element is not None
        return [random_value(rng, t.element, nested) for _ in range(rng.randint(0, 3))]
    if base == "MAP":
        assert t.key is not None and t.element is not None
        keys = {random_value(rng, t.key) for _ in range(rng.randint(0, 3))} - {None}
        return {k: random_value(rng, t.element, nested) for k in keys}
    return {name: random_value(rng, ft, True) for name, ft in t.fields}


def same(a: Any, b: Any) -> bool:
    """Equality that counts NaN equal to NaN, at any depth."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(type(a) is type(b) and a == b)


@pytest.mark.parametrize("seed", range(40))
def test_typed_path_equals_exact_path_on_random_nested_rows(seed: int) -> None:
    """Random schemas two levels deep, nulls anywhere: both paths give the same table."""
    rng = random.Random(seed)
    types = [random_type(rng, depth=2) for _ in range(rng.randint(1, 4))]
    names = [f"C{i}" for i in range(len(types))]
    # The sandbox reads the types as the wire carries them: as text.
    fmt = row_formatter([sqltypes.parse(str(t)) for t in types])
    lines = [fmt([random_value(rng, t) for t in types]).encode() for _ in range(60)]
    block = b"\n".join(lines) + b"\n"
    typed = RowDecoder(names, types)
    table = typed.decode(block, first_row=1)
    exact = RowDecoder(names, types).decode_exact(lines, 1)
    assert typed.exact_rows == 0, [str(t) for t in types]  # the typed path took the block
    assert table.schema == exact.schema
    assert same(table.to_pylist(), exact.to_pylist()), [str(t) for t in types]


def test_typed_path_reads_ksqldb_forms_at_top_level_and_inside_structs() -> None:
    """Text forms at top level, numeric forms in a STRUCT; decimals at the declared scale."""
    cols = [
        ("TS", "TIMESTAMP"), ("D", "DATE"), ("T", "TIME"), ("AMT", "DECIMAL(38, 10)"),
        ("S", "STRUCT<`TS` TIMESTAMP, `D` DATE, `T` TIME, `AMT` DECIMAL(12, 2), `X` DOUBLE>"),
        ("L", "ARRAY<TIME>"), ("M", "MAP<BIGINT, DECIMAL(4, 2)>"),
    ]
    d = RowDecoder([n for n, _ in cols], [parse_type(t) for _, t in cols])
    row = (
        '["1999-11-30T11:00:00.000","2020-02-29","00:00:10",'
        '-9999999999999999999999999999.9999999999,'
        '{"TS":943959600000,"D":1,"T":10000,"AMT":1.0E7,"X":"NaN"},["10:00",null],{"-5":1.1}]\n'
    )
    (value,) = d.decode(row.encode()).to_pylist()
    assert d.json_rows == 1
    assert value["TS"].isoformat() == "1999-11-30T11:00:00+00:00"
    assert value["D"].isoformat() == "2020-02-29" and value["T"].isoformat() == "00:00:10"
    assert f"{value['AMT']:f}" == "-9999999999999999999999999999.9999999999"
    s = value["S"]
    assert s["TS"] == value["TS"] and s["D"].isoformat() == "1970-01-02"
    assert s["T"].isoformat() == "00:00:10" and f"{s['AMT']:f}" == "10000000.00"
    assert math.isnan(s["X"])
    assert [t and t.isoformat() for t in value["L"]] == ["10:00:00", None]
    assert value["M"] == [(-5, Decimal("1.10"))]


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ('[1,{"A":[1,"x"]}]', "row 8, column S"),
        ('[1,{"A":[1,2]},3]', "row 8 has 3 values"),
        ('[1,{"A":[1,2]}', "row 8 is not valid JSON"),
        ('[1,{"A":[4294967296]}]', "row 8, column S"),
        ('["1",{"A":[1]}]', "row 8, column N"),
    ],
)
def test_a_malformed_nested_row_is_named_by_row_and_column(row: str, error: str) -> None:
    """The typed path refuses the block; the exact path then names the row and column."""
    d = RowDecoder(["N", "S"], [parse_type("INTEGER"), parse_type("STRUCT<`A` ARRAY<INTEGER>>")])
    block = ('[1,{"A":[1]}]\n' * 3 + row + "\n").encode()
    with pytest.raises(KsqlDBProtocolError, match=error):
        d.decode(block, first_row=5)


def test_times_of_day_in_arrow_match_the_text_and_refuse_other_forms() -> None:
    """HH:mm and HH:mm:ss are parsed natively; anything else is left to the caller."""
    out = times_of_day(pa.array(["00:00", "23:59:59", None, "10:01"]))
    assert out is not None
    assert [t and t.isoformat() for t in out.to_pylist()] == [
        "00:00:00", "23:59:59", None, "10:01:00"
    ]
    for odd in ("24:00", "10:00:00.123", "1:00", "10:60"):
        assert times_of_day(pa.array([odd])) is None


def test_struct_field_names_beyond_ascii_take_the_exact_path() -> None:
    """msgspec 0.23 loses non-ASCII TypedDict keys: such schemas are decoded row by row."""
    d = RowDecoder(["S"], [parse_type("STRUCT<`É` DOUBLE, `A` INTEGER>")])
    assert d.decode(b'[{"\xc3\x89":1.5,"A":1}]\n').to_pylist() == [{"S": {"É": 1.5, "A": 1}}]
    assert d.exact_rows == 1


def test_garbage_collection_pauses_nest_and_restore_the_previous_state() -> None:
    """The collector is off while any block decodes, and back as it was after the last one."""
    import gc

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # an application that turned it off keeps it off
    finally:
        gc.enable()
