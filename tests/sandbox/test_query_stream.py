"""POST /query-stream: formats, headers, pull-query semantics and errors (reference 2, 7)."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from lakeexportd.sandbox import Sandbox

from .helpers import lines, query

FLAT = "TRANSACTION_FLATTENED"
GOLDEN = Path(__file__).parent.parent / "data" / "sandbox" / "golden_rowtime_star.txt"


def test_delimited_is_default_and_chunked(client: httpx.Client) -> None:
    """No Accept: delimited body, its Content-Type, chunked transfer over HTTP/1.1."""
    r = query(client, f"SELECT * FROM {FLAT} LIMIT 2;")
    assert r.status_code == 200
    assert r.http_version == "HTTP/1.1"
    assert r.headers["content-type"] == "application/vnd.ksqlapi.delimited.v1"
    assert r.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in r.headers
    head, *rows = lines(r)
    meta = json.loads(head)
    assert list(meta) == ["queryId", "columnNames", "columnTypes"]
    assert meta["queryId"].startswith(f"transient_{FLAT}_")
    assert int(meta["queryId"].rsplit("_", 1)[1]) > 0
    assert meta["columnTypes"][3] == "DECIMAL(10, 2)"
    assert len(rows) == 2 and "\r" not in r.text


@pytest.mark.parametrize("accept", ["*/*", "application/vnd.ksqlapi.delimited.v1"])
def test_star_accept_is_delimited(client: httpx.Client, accept: str) -> None:
    """Accept */* (curl's default) and the delimited type both give the delimited format."""
    r = query(client, f"SELECT * FROM {FLAT} LIMIT 1;", headers={"Accept": accept})
    assert r.headers["content-type"] == "application/vnd.ksqlapi.delimited.v1"
    assert len(lines(r)) == 2


def test_application_json_is_one_array(client: httpx.Client) -> None:
    """application/json: one array, metadata first, rows after, no newline at all."""
    r = query(client, f"SELECT * FROM {FLAT} LIMIT 3;", headers={"Accept": "application/json"})
    assert r.headers["content-type"] == "application/json"
    assert "\n" not in r.text
    body = json.loads(r.text)
    assert set(body[0]) == {"queryId", "columnNames", "columnTypes"} and len(body) == 4


def test_v1_json_on_query_stream(client: httpx.Client) -> None:
    """application/vnd.ksql.v1+json on /query-stream gives the StreamedRow format of /query."""
    r = query(client, f"SELECT USER_ID FROM {FLAT} LIMIT 1;",
              headers={"Accept": "application/vnd.ksql.v1+json"})
    assert r.headers["content-type"] == "application/vnd.ksql.v1+json"
    header, row, final = r.text.split(",\n")
    assert header.startswith('[{"header":{"queryId":"transient_')
    assert header.endswith('"schema":"`USER_ID` STRING"}}')
    assert row.startswith('{"row":{"columns":["user_')
    assert final == '{"finalMessage":"Limit Reached"}]'


def test_unsupported_accept_is_406(client: httpx.Client) -> None:
    """An Accept no writer produces is refused with 406."""
    r = query(client, f"SELECT * FROM {FLAT};", headers={"Accept": "unsupported/type"})
    assert r.status_code == 406


def test_http2_prior_knowledge(sandbox: Sandbox) -> None:
    """h2c with prior knowledge works on the same port and streams the same body."""
    with httpx.Client(base_url=sandbox.url, http1=False, http2=True) as h2:
        r = query(h2, f"SELECT * FROM {FLAT} LIMIT 5;")
    assert r.http_version == "HTTP/2"
    assert r.headers["content-type"] == "application/vnd.ksqlapi.delimited.v1"
    assert len(lines(r)) == 6


def test_golden_rowtime_star(fresh: Callable[..., Sandbox]) -> None:
    """Seeded rows come out byte for byte as recorded (every type, nested values included)."""
    sb = fresh(seed=7, preload=40)
    with httpx.Client(base_url=sb.url) as c:
        r = query(c, "SELECT ROWTIME, * FROM TRANSACTION_STREAM LIMIT 6;")
    assert r.text == GOLDEN.read_text(encoding="utf-8")


def test_stream_pull_returns_every_row_interleaved(sandbox: Sandbox, client: httpx.Client) -> None:
    """A stream pull returns all rows: each partition in offset order, partitions interleaved."""
    truth = sandbox.rows(FLAT)
    r = query(client, f"SELECT ROWTIME, ROWTIME AS T2, TRANSACTION_ID FROM {FLAT};")
    rows = [json.loads(x) for x in lines(r)[1:]]
    assert sorted(x[2] for x in rows) == sorted(t["TRANSACTION_ID"] for t in truth)
    by_id = {t["TRANSACTION_ID"]: t for t in truth}
    partitions = [by_id[x[2]]["ROWPARTITION"] for x in rows]
    switches = sum(1 for a, b in zip(partitions, partitions[1:]) if a != b)
    assert switches > 3, "partitions take turns"
    rowtimes = [x[0] for x in rows]
    assert rowtimes != sorted(rowtimes), "not globally sorted by ROWTIME"
    for p in set(partitions):
        ids = [x[2] for x, q in zip(rows, partitions) if q == p]
        assert ids == sorted(ids), "each partition in offset order"


def test_disorder_is_bounded(fresh: Callable[..., Sandbox]) -> None:
    """Within a partition ROWTIME goes back sometimes, never by more than the 5 s bound."""
    sb = fresh()
    sb.generate(3000, (1_750_000_000_000, 1_750_000_030_000))
    back = 0
    rows = sb.rows(FLAT)
    for p in range(4):
        top = 0
        for row in (r for r in rows if r["ROWPARTITION"] == p):
            assert row["ROWTIME"] > top - 5_000
            back += row["ROWTIME"] < top
            top = max(top, row["ROWTIME"])
    assert back > 0


def test_where_rowtime_window_and_columns(sandbox: Sandbox, client: httpx.Client) -> None:
    """WHERE on ROWTIME bounds and value columns selects exactly the matching rows."""
    truth = sandbox.rows(FLAT)
    times = sorted(t["ROWTIME"] for t in truth)
    low, high = times[500], times[1500]
    r = query(client, f"SELECT TRANSACTION_ID FROM {FLAT} WHERE ROWTIME > {low} AND "
                      f"ROWTIME <= {high} AND (PAYMENT_METHOD = 'CARD' OR AMOUNT >= 1000.5) "
                      "AND NOT STATUS <> 'APPROVED';")
    got = sorted(json.loads(x)[0] for x in lines(r)[1:])
    expected = sorted(
        t["TRANSACTION_ID"] for t in truth
        if low < t["ROWTIME"] <= high and (t["PAYMENT_METHOD"] == "CARD"
                                           or t["AMOUNT"] >= Decimal("1000.5"))
        and t["STATUS"] == "APPROVED"
    )
    assert got == expected and got


def test_where_is_null_and_timestamp_string(sandbox: Sandbox, client: httpx.Client) -> None:
    """IS NULL / IS NOT NULL, and TIMESTAMP compared with a string literal, work."""
    truth = sandbox.rows(FLAT)
    r = query(client, f"SELECT TRANSACTION_ID FROM {FLAT} WHERE EMAIL IS NULL;")
    assert len(lines(r)) - 1 == sum(t["EMAIL"] is None for t in truth) > 0
    r = query(client, f"SELECT TRANSACTION_ID FROM {FLAT} WHERE EMAIL IS NOT NULL "
                      "AND TRANSACTION_TIME >= '2025-06-14T00:00:00';")
    expected = sum(t["EMAIL"] is not None and t["ROWTIME"] >= 1_749_859_200_000 for t in truth)
    assert len(lines(r)) - 1 == expected > 0


def test_limit_and_projection(client: httpx.Client) -> None:
    """LIMIT caps the rows; named columns come out in the order selected."""
    r = query(client, f"SELECT AMOUNT, USER_ID FROM {FLAT} LIMIT 7;")
    head, *rows = lines(r)
    assert json.loads(head)["columnNames"] == ["AMOUNT", "USER_ID"]
    assert json.loads(head)["columnTypes"] == ["DECIMAL(10, 2)", "STRING"]
    assert len(rows) == 7


def test_pseudo_columns_only_when_selected(client: httpx.Client) -> None:
    """SELECT * has no ROWTIME; SELECT ROWTIME, * puts a BIGINT ROWTIME first."""
    star = json.loads(lines(query(client, f"SELECT * FROM {FLAT} LIMIT 1;"))[0])
    assert "ROWTIME" not in star["columnNames"]
    with_rowtime = json.loads(lines(query(client, f"SELECT ROWTIME, * FROM {FLAT} LIMIT 1;"))[0])
    assert with_rowtime["columnNames"] == ["ROWTIME", *star["columnNames"]]
    assert with_rowtime["columnTypes"][0] == "BIGINT"


def test_table_pull_scan(sandbox: Sandbox, client: httpx.Client) -> None:
    """A table pull returns key and value columns of every row, with a query_<ms> id."""
    r = query(client, "SELECT * FROM PAYMENT_TOTALS;")
    head, *rows = lines(r)
    meta = json.loads(head)
    assert meta["queryId"].startswith("query_") and meta["queryId"][6:].isdigit()
    assert meta["columnNames"] == ["PAYMENT_METHOD", "TRANSACTION_COUNT", "TOTAL_AMOUNT",
                                   "FRAUD_COUNT"]
    truth = sandbox.table("PAYMENT_TOTALS")
    assert [json.loads(x)[0] for x in rows] == [t["PAYMENT_METHOD"] for t in truth]


ERR_SUFFIX = (" See https://cnfl.io/queries for more info.\n"
              "Add EMIT CHANGES if you intended to issue a push query.")


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT ROWOFFSET FROM TRANSACTION_FLATTENED;",
     "Pull queries don't support the following columns in SELECT clauses: `ROWOFFSET`"
     + ERR_SUFFIX),
    ("SELECT * FROM TRANSACTION_FLATTENED WHERE ROWPARTITION = 1;",
     "Pull queries don't support the following columns in WHERE clauses: `ROWPARTITION`"
     + ERR_SUFFIX),
    ("SELECT * FROM TRANSACTION_FLATTENED LIMIT -1;",
     "Pull queries don't support negative integers in the LIMIT clause." + ERR_SUFFIX),
    ("SELECT * FROM NOPE;", "Exception while preparing statement: NOPE does not exist."),
])
def test_statement_errors(client: httpx.Client, sql: str, message: str) -> None:
    """Rejected pull queries answer 400 statement_error 40001 with ksqlDB's message."""
    r = query(client, sql)
    assert r.status_code == 400
    assert r.content == json.dumps({
        "@type": "statement_error", "error_code": 40001,
        "message": f"{message}\nStatement: {sql}", "statementText": sql, "entities": [],
    }, separators=(",", ":")).encode()


def test_missing_sql(client: httpx.Client) -> None:
    """A body without "sql" is 400/40000 "Invalid JSON in request: Missing required ..."."""
    r = client.post("/query-stream", json={"properties": {}})
    assert r.status_code == 400
    body = r.json()
    assert list(body) == ["@type", "error_code", "message"]
    assert body["error_code"] == 40000
    assert body["message"].startswith(
        "Invalid JSON in request: Missing required creator property 'sql'")


def test_invalid_json(client: httpx.Client) -> None:
    """A body that is not JSON is 400/40000 "Invalid JSON in request: ..."."""
    r = client.post("/query-stream", content=b"{nope")
    assert r.status_code == 400 and r.json()["message"].startswith("Invalid JSON in request: ")


def test_more_than_one_statement(client: httpx.Client) -> None:
    """Two statements are refused with "Expected exactly one KSQL statement; found 2 instead"."""
    r = query(client, f"SELECT * FROM {FLAT}; SELECT * FROM {FLAT};")
    assert r.status_code == 400
    assert r.json()["message"] == "Expected exactly one KSQL statement; found 2 instead"
    assert r.json()["error_code"] == 40001


def test_session_variables(client: httpx.Client) -> None:
    """${name} in the statement is replaced by the request's sessionVariables value."""
    r = query(client, "SELECT * FROM ${src} LIMIT ${n};",
              sessionVariables={"src": FLAT, "n": 2})
    assert r.status_code == 200 and len(lines(r)) == 3
