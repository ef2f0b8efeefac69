"""The sandbox's own ksqlDB types: DDL text in, ksqlDB's spelling out (reference 2.5 and 5)."""

from __future__ import annotations

import pytest

from lakeexportd.sandbox.sqltypes import SqlType, TypeSyntaxError, parse


@pytest.mark.parametrize("text", [
    # The exact strings of the wire reference, section 2.5.
    "BOOLEAN", "INTEGER", "BIGINT", "DOUBLE", "STRING", "BYTES", "TIMESTAMP", "DATE", "TIME",
    "DECIMAL(4, 2)", "ARRAY<STRING>", "MAP<STRING, STRING>", "STRUCT<`F1` STRING, `F2` INTEGER>",
    "STRUCT<`F1` ARRAY<STRING>>", "STRUCT< >", "MAP<STRING, ARRAY<STRING>>",
    "DECIMAL(38, 10)", "DECIMAL(76, 20)", "MAP<STRING, DECIMAL(38, 10)>",
])
def test_ksqldb_spelling_reads_back_unchanged(text: str) -> None:
    """A type ksqlDB writes in columnTypes is read and written back byte for byte."""
    assert str(parse(text)) == text


@pytest.mark.parametrize(("ddl", "written"), [
    ("INT", "INTEGER"),
    ("varchar", "STRING"),
    ("DECIMAL(10,2)", "DECIMAL(10, 2)"),
    ("map<string,int>", "MAP<STRING, INTEGER>"),
    ("STRUCT<a INT, `b` STRING>", "STRUCT<`A` INTEGER, `b` STRING>"),
    ("STRUCT<>", "STRUCT< >"),
])
def test_ddl_spellings_are_normalised(ddl: str, written: str) -> None:
    """DDL synonyms, spacing and unquoted field names come out as ksqlDB writes them."""
    assert str(parse(ddl)) == written


def test_parts_are_what_describe_shows() -> None:
    """MAP keeps key and value apart (DESCRIBE's memberSchema is the value); DECIMAL its digits."""
    t = parse("MAP<STRING, DECIMAL(12, 3)>")
    assert t.key == SqlType("STRING")
    assert t.member == SqlType("DECIMAL", precision=12, scale=3)
    assert parse("STRUCT<`X` DATE>").fields == (("X", SqlType("DATE")),)


def test_a_back_quote_in_a_field_name_is_doubled() -> None:
    """Inside a quoted name a back quote is written twice, and read back as one."""
    t = parse("STRUCT<`X``Y` STRING, `with space` INT>")
    assert [name for name, _ in t.fields] == ["X`Y", "with space"]
    assert str(t) == "STRUCT<`X``Y` STRING, `with space` INTEGER>"


@pytest.mark.parametrize(("text", "message"), [
    ("FOO", "Cannot resolve unknown type: FOO"),
    ("DECIMAL(3, 4)", "scale no larger than precision"),
    ("DECIMAL(0, 0)", "precision must be at least 1"),
    ("DECIMAL(x, 2)", "Expected a number but found 'x'"),
    ("ARRAY<INT", "ends too early"),
    ("ARRAY<INT>>", "Unexpected '>'"),
    ("MAP<STRING INT>", "Expected ',' but found 'INT'"),
])
def test_bad_types_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(TypeSyntaxError, match=message):
        parse(text)
