"""Push queries on the wire (wire reference 2.3, 2.6, 3.3, 8): an endless body that stays
silent while idle, ``/close-query``, a server-side end (restart) of the body, and
``ksql.max.push.queries``. Read off the raw socket, HTTP/1.1 chunk by chunk and h2c frame by
frame, because what matters is what is (and is not) written."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from wire import H1Stream, H2Stream

from lakeexportd.sandbox import Sandbox

FLAT = "TRANSACTION_FLATTENED"
PUSH = f"SELECT TRANSACTION_ID FROM {FLAT} EMIT CHANGES;"
V1 = "application/vnd.ksql.v1+json"
IDLE = 1.5  # seconds of silence asked of an idle push body
EARLIEST = {"auto.offset.reset": "earliest"}


def close_query(sb: Sandbox, query_id: str) -> httpx.Response:
    with httpx.Client(base_url=sb.url, timeout=10) as c:
        return c.post("/close-query", json={"queryId": query_id})


def test_idle_push_writes_nothing_then_the_next_row_http1(fresh: Callable[..., Sandbox]) -> None:
    """/query-stream from earliest: the replayed rows, then silence (no keep-alive, no empty
    chunk, and no end: earliest never ends), then one chunk for the next row; /close-query
    answers 200 with an empty body and the chunked body ends with its last chunk."""
    sb = fresh(preload=20)
    ids = [r["TRANSACTION_ID"] for r in sb.rows(FLAT)]
    with H1Stream(sb.url, "/query-stream", {"sql": PUSH, "properties": EARLIEST}) as s:
        assert s.status == 200 and b"transfer-encoding: chunked" in s.head
        query_id = json.loads(s.chunk())["queryId"]
        replayed = [json.loads(s.chunk()) for _ in ids]
        assert sorted(r[0] for r in replayed) == sorted(ids)
        assert s.silent(IDLE)
        sb.generate(1)
        row = s.chunk()
        assert row.endswith(b"]\n") and json.loads(row) == [sb.rows(FLAT)[-1]["TRANSACTION_ID"]]
        assert s.silent(0.2)
        closed = close_query(sb, query_id)
        assert closed.status_code == 200 and closed.content == b""
        assert s.chunk() == b""


def test_idle_push_on_query_endpoint_then_completed(fresh: Callable[..., Sandbox]) -> None:
    """/query (StreamedRow JSON), latest: only the header until a row is generated, silence
    while idle; after /close-query the array ends with "Query Completed" as ksqlDB's completed
    publisher writes it, then the last chunk."""
    sb = fresh(preload=20)
    with H1Stream(sb.url, "/query", {"ksql": PUSH}, accept=V1) as s:
        header = s.chunk()
        assert header.startswith(b'[{"header":{"queryId":"transient_TRANSACTION_FLATTENED_')
        assert s.silent(IDLE)
        sb.generate(1)
        expected = sb.rows(FLAT)[-1]["TRANSACTION_ID"]
        # Each element with the ",\n" after it, as ksqlDB's writeBuffer writes it: a row is a
        # whole line as soon as it is sent.
        assert s.chunk() == b'{"row":{"columns":["' + expected.encode() + b'"]}},\n'
        query_id = json.loads(header.rstrip(b",\n") + b"]")[0]["header"]["queryId"]
        assert close_query(sb, query_id).status_code == 200
        assert s.chunk() == b'{"finalMessage":"Query Completed"}]'
        assert s.chunk() == b""


def test_idle_push_writes_no_frame_over_h2c(fresh: Callable[..., Sandbox]) -> None:
    """Over h2c an idle push stream sends no frame at all (no PING, no empty DATA); the next
    row is one DATA frame; /close-query ends the stream with no more data."""
    sb = fresh(preload=5)
    with H2Stream(sb.url, "/query-stream", {"sql": PUSH}) as s:
        header = s.frames()
        assert s.status == 200 and len(header) == 1
        query_id = json.loads(header[0])["queryId"]
        assert s.silent(IDLE)
        sb.generate(1)
        assert s.frames() == [json.dumps([sb.rows(FLAT)[-1]["TRANSACTION_ID"]]).encode() + b"\n"]
        assert close_query(sb, query_id).status_code == 200
        assert s.frames() == [] and s.ended


def test_close_query_errors(sandbox: Sandbox, client: httpx.Client) -> None:
    """An unknown id is 400/40000 "No query with id <id>"; a body without queryId is refused
    as ksqlDB's JSON binding refuses it."""
    r = client.post("/close-query", json={"queryId": "transient_X_1"})
    assert r.status_code == 400
    assert r.content == (b'{"@type":"generic_error","error_code":40000,'
                         b'"message":"No query with id transient_X_1"}')
    r = client.post("/close-query", json={})
    assert r.status_code == 400 and r.json()["error_code"] == 40000
    assert r.json()["message"].startswith(
        "Invalid JSON in request: Missing required creator property 'queryId'")


@pytest.mark.parametrize("path, accept, last", [
    ("/query-stream", "application/vnd.ksqlapi.delimited.v1", None),
    ("/query", V1, b'{"finalMessage":"Query Completed"}]'),
])
def test_server_end_finishes_the_body(fresh: Callable[..., Sandbox], path: str, accept: str,
                                      last: bytes | None) -> None:
    """end_queries("end") (a restart as the client sees it when ksqlDB completes its queries):
    every running push body ends properly; the ids are gone, so /close-query says so."""
    sb = fresh(preload=3)
    key = "ksql" if path == "/query" else "sql"
    with H1Stream(sb.url, path, {key: PUSH}, accept=accept) as a, \
            H1Stream(sb.url, path, {key: PUSH}, accept=accept) as b:
        a.chunk(), b.chunk()
        assert sb.end_queries("end") == 2
        for s in (a, b):
            if last is not None:
                assert s.chunk() == last
            assert s.chunk() == b""
    assert not sb.app.queries
    assert close_query(sb, "transient_TRANSACTION_FLATTENED_1").status_code == 400


def test_server_drop_closes_mid_body(fresh: Callable[..., Sandbox]) -> None:
    """end_queries("drop"): the connection closes without the last chunk, as when the
    server process dies; the client must treat the body as cut."""
    sb = fresh(preload=3)
    with H1Stream(sb.url, "/query-stream", {"sql": PUSH, "properties": EARLIEST}) as s:
        for _ in range(4):
            s.chunk()
        assert sb.end_queries("drop") == 1
        with pytest.raises(ConnectionError):
            s.chunk()


def test_end_push_fault_ends_after_rows(fresh: Callable[..., Sandbox]) -> None:
    """The end_push fault ends a push body cleanly after N rows; pull queries do not use it up."""
    sb = fresh(preload=30)
    sb.inject("end_push", rows=4)
    with httpx.Client(base_url=sb.url, timeout=10) as c:
        pull = c.post("/query-stream", json={"sql": f"SELECT * FROM {FLAT};"})
        assert pull.text.count("\n") == 1 + 30
        with H1Stream(sb.url, "/query-stream", {"sql": PUSH, "properties": EARLIEST}) as s:
            chunks = [s.chunk() for _ in range(1 + 4)]
            assert all(x.startswith(b'["txn_') for x in chunks[1:])
            assert s.chunk() == b""
        assert sb.app.faults.pending() == []


def test_max_push_queries(fresh: Callable[..., Sandbox]) -> None:
    """ksql.max.push.queries: one more push query (or stream pull) than allowed gets
    400/40003; table pulls do not count; a closed query frees its place at once."""
    sb = fresh(preload=3, max_push_queries=2)
    refused = (b'{"@type":"generic_error","error_code":40003,'
               b'"message":"Maximum number of push queries exceeded"}')
    with H1Stream(sb.url, "/query-stream", {"sql": PUSH}) as a, \
            H1Stream(sb.url, "/query-stream", {"sql": PUSH}) as b, \
            httpx.Client(base_url=sb.url, timeout=10) as c:
        first = json.loads(a.chunk())["queryId"]
        b.chunk()
        for sql in (PUSH, f"SELECT * FROM {FLAT};"):
            r = c.post("/query-stream", json={"sql": sql})
            assert (r.status_code, r.content) == (400, refused)
        r = c.post("/query", json={"ksql": PUSH})
        assert r.status_code == 400 and r.json()["error_code"] == 40003
        assert c.post("/query-stream", json={"sql": "SELECT * FROM USER_SUMMARY;"}).is_success
        assert close_query(sb, first).status_code == 200
        assert a.chunk() == b""
        r = c.post("/query-stream", json={"sql": f"SELECT * FROM {FLAT} LIMIT 1;"})
        assert r.status_code == 200 and r.text.count("\n") == 2


def test_admin_end_queries(fresh: Callable[..., Sandbox]) -> None:
    """POST /_sandbox/end_queries ends the running queries ({"ended": n}); a bad "how" is 400."""
    sb = fresh(preload=3)
    with H1Stream(sb.url, "/query-stream", {"sql": PUSH}) as s, \
            httpx.Client(base_url=sb.url, timeout=10) as c:
        s.chunk()
        assert c.post("/_sandbox/end_queries", json={"how": "later"}).status_code == 400
        assert c.post("/_sandbox/end_queries", json={}).json() == {"ended": 1}
        assert s.chunk() == b""
        assert c.get("/_sandbox/stats").json()["running_queries"] == 0
