"""The SQL subset parser: statements, expressions, splitting, and its refusals."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from lakeexportd.sandbox import sql
from lakeexportd.sandbox.syntax import Alter, Cmp, Col, IsNull, Lit, Logic, Not, Select, Show


def test_select_with_everything() -> None:
    """A SELECT with pseudo columns, *, WHERE precedence, EMIT CHANGES and LIMIT parses."""
    s = sql.parse("select ROWTIME, *, amount AS a FROM `TRANSACTION_STREAM` WHERE rowtime > 5 "
                  "AND (x = 'it''s' OR NOT y IS NOT NULL) OR z <> -1.5 EMIT CHANGES LIMIT 3;")
    assert isinstance(s, Select)
    assert [(i.column, i.alias) for i in s.items] == [("ROWTIME", None), (None, None),
                                                       ("AMOUNT", "A")]
    assert s.source == "TRANSACTION_STREAM" and s.push and s.limit == 3
    assert s.where == Logic("OR", Logic("AND", Cmp(">", Col("ROWTIME"), Lit(5)), Logic(
        "OR", Cmp("=", Col("X"), Lit("it's")), Not(IsNull(Col("Y"), negated=True)))),
        Cmp("!=", Col("Z"), Lit(Decimal("-1.5"))))


def test_catalog_statements() -> None:
    """SHOW/LIST [EXTENDED] and ALTER ... ADD with several columns parse."""
    assert sql.parse("LIST TABLES EXTENDED;") == Show("TABLES", True)
    alter = sql.parse("ALTER STREAM s ADD COLUMN c DECIMAL(10, 2), ADD d STRUCT<`A` STRING>;")
    assert alter == Alter("STREAM", "S", (("C", "DECIMAL (10 , 2)"),
                                          ("D", "STRUCT < `A` STRING >")))


def test_split_statements_respects_quotes() -> None:
    """Statements split on ; outside quotes; empty ones are dropped."""
    assert sql.split_statements("SELECT 'a;b' FROM x; ;SHOW STREAMS") == [
        "SELECT 'a;b' FROM x;", "SHOW STREAMS"]


@pytest.mark.parametrize("text", ["SELECT FROM x;", "SELECT * FROM x WHERE;",
                                  "SELECT * FROM x LIMIT y;", "SELECT * FROM x y z;"])
def test_syntax_errors(text: str) -> None:
    """Malformed statements raise SqlError with a line:column position."""
    with pytest.raises(sql.SqlError, match=r"^line 1:\d+: Syntax error at or near"):
        sql.parse(text)


def test_unsupported_is_said_plainly(client: httpx.Client) -> None:
    """Statements outside the subset answer 400/40001 saying what the sandbox supports."""
    r = client.post("/ksql", json={"ksql": "CREATE STREAM X (A INT) WITH (KAFKA_TOPIC='x');"})
    assert r.status_code == 400 and r.json()["error_code"] == 40001
    assert "The sandbox only supports" in r.json()["message"]
    r = client.post("/query-stream", json={"sql": "SHOW STREAMS;"})
    assert r.status_code == 400 and r.json()["message"] == "Neither a query nor a print statement"
    r = client.post("/query-stream",
                    json={"sql": "SELECT * FROM TRANSACTION_STREAM GROUP BY USER_ID;"})
    assert r.status_code == 400 and "GROUP" in r.json()["message"]
