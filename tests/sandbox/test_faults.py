"""Fault injection: every kind, its body shape, and its count and path filters."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from lakeexportd.sandbox import Fault, Sandbox
from lakeexportd.sandbox.faults import FaultSpecError

from .conftest import fixed_clock
from .helpers import query

SQL = "SELECT * FROM TRANSACTION_FLATTENED;"
PROCESSING = (b'{"@type":"generic_error","error_code":50000,'
              b'"message":"java.lang.RuntimeException: Failure in processing"}\n')


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox.start(seed=5, preload=300, clock=fixed_clock) as sandbox:
        yield sandbox


@pytest.fixture()
def c(sb: Sandbox) -> Iterator[httpx.Client]:
    sb.clear_faults()
    with httpx.Client(base_url=sb.url, timeout=10) as client:
        yield client
    sb.clear_faults()


@pytest.mark.parametrize(("status", "code", "message"), [
    (429, 42900, "Host is at rate limit for pull queries. Currently set to 1.0 qps."),
    (503, 50302, "Server initializing"),
    (500, 50000, "The server encountered an internal error when processing the query. "
                 "Please consult the server logs for more information."),
])
def test_status(sb: Sandbox, c: httpx.Client, status: int, code: int, message: str) -> None:
    """A status fault answers ksqlDB's body for that status, once, then the query works."""
    sb.inject("status", status=status, path="/query-stream")
    r = query(c, SQL)
    assert r.status_code == status
    assert r.json() == {"@type": "generic_error", "error_code": code, "message": message}
    assert (r.headers.get("retry-after") == "10") == (status == 503)
    assert query(c, SQL).status_code == 200


def test_path_filter_and_count(sb: Sandbox, c: httpx.Client) -> None:
    """A fault hits only its path, exactly count times."""
    sb.inject("status", status=500, path="/ksql", count=2)
    assert query(c, SQL).status_code == 200
    ksql = {"ksql": "SHOW STREAMS;"}
    assert [c.post("/ksql", json=ksql).status_code for _ in range(3)] == [500, 500, 200]


def test_latency(sb: Sandbox, c: httpx.Client) -> None:
    """latency delays the answer by the given seconds."""
    sb.inject("latency", seconds=0.3, path="/info")
    start = time.monotonic()
    assert c.get("/info").status_code == 200
    assert time.monotonic() - start >= 0.3


def test_cut_after_rows(sb: Sandbox, c: httpx.Client) -> None:
    """cut_after_rows: N whole rows, then half a row without newline, then the connection drops."""
    sb.inject("cut_after_rows", rows=5)
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with c.stream("POST", "/query-stream", json={"sql": SQL}) as r:
            for chunk in r.iter_bytes():
                received += chunk
    lines = received.split(b"\n")
    assert len(lines) == 7 and lines[-1].startswith(b'["txn_') and not lines[-1].endswith(b"]")


def test_error_after_rows(sb: Sandbox, c: httpx.Client) -> None:
    """error_after_rows: status 200, N rows, then ksqlDB's in-stream error line, then the end."""
    sb.inject("error_after_rows", rows=3)
    r = query(c, SQL)
    assert r.status_code == 200
    lines = r.content.split(b"\n")
    assert len(lines) == 6 and r.content.endswith(PROCESSING)


def test_error_after_rows_v1_json(sb: Sandbox, c: httpx.Client) -> None:
    """On the StreamedRow format the error is an errorMessage element (trailing ",\\n]")."""
    sb.inject("error_after_rows", rows=1)
    r = c.post("/query", json={"ksql": SQL}, headers={"Accept": "application/vnd.ksql.v1+json"})
    assert r.text.endswith(
        ',\n{"errorMessage":{"@type":"generic_error","error_code":50000,'
        '"message":"java.lang.RuntimeException: Failure in processing"}},\n]')


def test_malformed_line(sb: Sandbox, c: httpx.Client) -> None:
    """malformed_line: a line that is not JSON after N rows, the rest unchanged."""
    sb.inject("malformed_line", rows=2)
    lines = query(c, SQL).text.split("\n")
    assert lines[3] == "this is not JSON {"
    json.loads(lines[4])


def test_wrong_column_count(sb: Sandbox, c: httpx.Client) -> None:
    """wrong_column_count: row N+1 has one value fewer than the header has columns."""
    sb.inject("wrong_column_count", rows=4)
    head, *rows = query(c, SQL).text.splitlines()
    width = len(json.loads(head)["columnNames"])
    assert [len(json.loads(x)) for x in rows[3:6]] == [width, width - 1, width]


def test_big_row_bytes(sb: Sandbox, c: httpx.Client) -> None:
    """big_row_bytes: one row carries a STRING value of the given size."""
    sb.inject("big_row_bytes", rows=1, bytes=3_000_000)
    rows = query(c, SQL).text.splitlines()[1:]
    assert json.loads(rows[1])[0] == "x" * 3_000_000
    assert len(rows[0]) < 1000 and len(rows[2]) < 1000


def test_trickle(sb: Sandbox, c: httpx.Client) -> None:
    """trickle: the body arrives in small chunks with delays, unchanged."""
    expected = query(c, "SELECT * FROM PAYMENT_TOTALS;").content
    sb.inject("trickle", chunk_bytes=100, seconds=0.01)
    chunks = []
    with c.stream("POST", "/query-stream", json={"sql": "SELECT * FROM PAYMENT_TOTALS;"}) as r:
        chunks = list(r.iter_raw())
    body = b"".join(chunks)
    assert body.split(b"\n", 1)[1] == expected.split(b"\n", 1)[1]
    assert len(chunks) >= len(body) // 100


def test_admin_endpoint(sb: Sandbox, c: httpx.Client) -> None:
    """POST /_sandbox/faults adds faults, GET lists them, DELETE clears them."""
    r = c.post("/_sandbox/faults", json={"faults": [
        {"kind": "status", "status": 429, "path": "/query-stream", "count": 3}]})
    assert r.status_code == 200 and r.json()["faults"][0]["count"] == 3
    assert query(c, SQL).status_code == 429
    assert c.get("/_sandbox/faults").json()["faults"][0]["count"] == 2
    assert c.delete("/_sandbox/faults").json() == {"faults": []}
    assert query(c, SQL).status_code == 200
    bad = c.post("/_sandbox/faults", json={"kind": "explode"})
    assert bad.status_code == 400 and "explode" in bad.json()["error"]


def test_cli_fault_spec() -> None:
    """The CLI form KIND:key=value,... parses, and applies to every request by default."""
    fault = Fault.parse("status:status=503,path=/query-stream")
    assert (fault.kind, fault.status, fault.path, fault.count) == ("status", 503,
                                                                  "/query-stream", None)
    assert Fault.parse("cut_after_rows:rows=10,count=2").count == 2
    with pytest.raises(FaultSpecError):
        Fault.parse("latency:oops")


def test_cut_over_http2(sb: Sandbox) -> None:
    """Over HTTP/2 a cut body ends early, its last row partial and without newline."""
    sb.inject("cut_after_rows", rows=3)
    with httpx.Client(base_url=sb.url, http1=False, http2=True) as h2:
        r = query(h2, SQL)
    assert r.http_version == "HTTP/2"
    *whole, last = r.content.split(b"\n")
    assert len(whole) == 4 and last.startswith(b'["txn_') and not last.endswith(b"]")
