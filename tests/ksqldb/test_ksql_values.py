"""Exact conversion of ksqlDB row values: every digit, every form ksqlDB writes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from lakeexportd.ksqldb.types import parse_type
from lakeexportd.ksqldb.values import (
    RejectedValue,
    parse_date_days,
    parse_time_ms,
    parse_timestamp_ms,
    value_converter,
)


def test_timestamp_strings_are_utc_epoch_millis() -> None:
    """A TIMESTAMP string without zone is UTC; with an offset it is converted."""
    assert parse_timestamp_ms("1999-11-30T11:00:00.000") == 943959600000
    assert parse_timestamp_ms("1970-01-01T00:00:00.001") == 1
    assert parse_timestamp_ms("1970-01-01T01:00:00.000+01:00") == 0


@pytest.mark.parametrize(
    ("text", "ms"),
    [("00:00", 0), ("00:00:10", 10_000), ("23:59:59.999", 86_399_999), ("12:30", 45_000_000)],
)
def test_time_accepts_minutes_seconds_and_millis(text: str, ms: int) -> None:
    """TIME accepts HH:mm as ksqlDB writes whole minutes, and HH:mm:ss[.SSS]."""
    assert parse_time_ms(text) == ms


@pytest.mark.parametrize("text", ["24:00", "1:00", "12:60", "noon"])
def test_time_rejects_what_is_not_a_time_of_day(text: str) -> None:
    """Malformed or out-of-range TIME text is rejected, not wrapped around."""
    with pytest.raises(ValueError):
        parse_time_ms(text)


def test_date_is_days_since_epoch() -> None:
    """DATE text becomes the date32 day number."""
    assert parse_date_days("1970-01-02") == 1
    assert parse_date_days("1969-12-31") == -1


def _convert(text: str, value: object) -> object:
    return value_converter(parse_type(text))(value)


def test_decimal_keeps_every_digit() -> None:
    """A DECIMAL(38, 10) value survives digit for digit, and scale is padded exactly."""
    big = Decimal("1234567890123456789012345678.0123456789")
    assert _convert("DECIMAL(38, 10)", big) == big
    assert str(_convert("DECIMAL(4, 2)", Decimal("1.1"))) == "1.10"
    assert str(_convert("DECIMAL(4, 2)", 10)) == "10.00"


EDGE_38 = "9999999999999999999999999999.9999999999"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("DECIMAL(38, 10)", EDGE_38),
        ("DECIMAL(38, 10)", "-" + EDGE_38),
        ("DECIMAL(38, 10)", "-0.0000000001"),
        ("DECIMAL(38, 0)", "9" * 38),
        ("DECIMAL(38, 38)", "-0." + "9" * 38),
        ("DECIMAL(76, 20)", "9" * 56 + "." + "9" * 20),
        ("DECIMAL(76, 20)", "-" + "9" * 56 + "." + "9" * 20),
        ("DECIMAL(76, 0)", "-" + "9" * 76),
    ],
)
def test_decimal_at_full_precision_is_kept_digit_for_digit(text: str, value: str) -> None:
    """Nothing on the exact path rounds to the default context's 28 digits."""
    assert f"{_convert(text, Decimal(value)):f}" == value


def test_decimal_with_trailing_zeros_past_the_scale_is_exact() -> None:
    """1.000 is 1.00 exactly: dropping zeros is not rounding."""
    assert str(_convert("DECIMAL(4, 2)", Decimal("1.000"))) == "1.00"
    assert str(_convert("DECIMAL(12, 2)", Decimal("1.0E+7"))) == "10000000.00"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("DECIMAL(4, 2)", Decimal("1.234")),
        ("DECIMAL(4, 2)", Decimal("100.00")),
        ("DECIMAL(4, 2)", Decimal("-100")),
        ("DECIMAL(38, 10)", Decimal("1" + EDGE_38)),
        ("DECIMAL(38, 10)", Decimal(EDGE_38 + "1")),
        ("DECIMAL(38, 10)", Decimal("1.0E+28")),
        ("DECIMAL(76, 20)", Decimal("1" + "0" * 56)),
        ("DECIMAL(76, 0)", Decimal("1E+100")),
    ],
)
def test_decimal_that_does_not_fit_is_an_error(text: str, value: Decimal) -> None:
    """A value with more scale or more integer digits than the type is never rounded."""
    with pytest.raises(RejectedValue, match="does not fit"):
        _convert(text, value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(Decimal("1.0E7"), 1.0e7), (Decimal("234.0"), 234.0), (3, 3.0), ("-Infinity", float("-inf"))],
)
def test_double_accepts_java_forms(value: object, expected: float) -> None:
    """DOUBLE accepts Java's exponent form, integers and the quoted infinities."""
    assert _convert("DOUBLE", value) == expected


def test_double_nan_string() -> None:
    """The quoted string NaN is a NaN double."""
    result = _convert("DOUBLE", "NaN")
    assert isinstance(result, float) and result != result


def test_integer_bounds_and_booleans_are_checked() -> None:
    """INTEGER is 32-bit, BIGINT 64-bit, and JSON true is not a number."""
    assert _convert("BIGINT", 2**63 - 1) == 2**63 - 1
    for text, value in [("INTEGER", 2**31), ("BIGINT", 2**63), ("INTEGER", True), ("BOOLEAN", 1)]:
        with pytest.raises(ValueError):
            _convert(text, value)


def test_bytes_are_base64_decoded() -> None:
    """BYTES arrive as padded base64 and become raw bytes; bad base64 is an error."""
    assert _convert("BYTES", "ew==") == b"{"
    assert _convert("BYTES", "AAEC") == b"\x00\x01\x02"
    with pytest.raises(ValueError):
        _convert("BYTES", "not base64!")


def test_nested_values_accept_the_numeric_forms_ksqldb_uses_inside_structs() -> None:
    """Inside a STRUCT, TIMESTAMP/DATE/TIME are numbers and DECIMAL lost its trailing zeros."""
    t = "STRUCT<`TS` TIMESTAMP, `D` DATE, `T` TIME, `AMT` DECIMAL(4, 2), `B` BYTES>"
    value = {"TS": 943959600000, "D": 1, "T": 10_000, "AMT": Decimal("1.1"), "B": "IQ=="}
    converted = _convert(t, value)
    assert converted == {"TS": 943959600000, "D": 1, "T": 10_000_000, "AMT": Decimal("1.10"), "B": b"!"}
    arr = pa.array([converted, None], type=parse_type(t).arrow)
    assert arr[0]["TS"].as_py() == dt.datetime(1999, 11, 30, 11, tzinfo=dt.UTC)
    assert arr[0]["T"].as_py() == dt.time(0, 0, 10)  # millis of the day, stored as time64[us]


def test_nulls_anywhere_in_nested_values() -> None:
    """NULL is accepted at top level, inside arrays, map values and struct fields."""
    t = "STRUCT<`A` ARRAY<INTEGER>, `M` MAP<STRING, STRING>, `S` STRUCT<`X` STRING>>"
    converted = _convert(t, {"A": [1, None], "M": {"k": None}, "S": None})
    assert converted == {"A": [1, None], "M": [("k", None)], "S": None}
    assert _convert(t, None) is None
    assert pa.array([converted], type=parse_type(t).arrow).to_pylist()[0]["M"] == [("k", None)]


def test_map_keys_of_other_types_are_parsed_from_their_text() -> None:
    """JSON object keys are text; a MAP<INTEGER, ...> key is parsed back to a number."""
    assert _convert("MAP<INTEGER, BOOLEAN>", {"1": True}) == [(1, True)]


def test_struct_with_unknown_field_is_an_error() -> None:
    """A struct value with a field the type does not declare is not silently dropped."""
    with pytest.raises(ValueError, match="unknown fields"):
        _convert("STRUCT<`A` INTEGER>", {"A": 1, "B": 2})
