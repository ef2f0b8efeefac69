"""Push queries (``KsqlDBClient.push``) against the real sandbox server over HTTP: rows as they
are produced, exact ROWPARTITION/ROWOFFSET, the offset predicate, and how a body ends.

Liveness: a wait for rows gives up after LIVENESS seconds (a failure, not a measurement).
The sandbox's rows are the truth; a row's offset is its position within its partition.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa
import pytest
from lakecheck import wire_truth

from lakeexportd.errors import KsqlDBStreamError, PushQueryEnded
from lakeexportd.ksqldb import sql
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.ksqldb.push import PushQuery
from lakeexportd.sandbox import Sandbox

SOURCE = "TRANSACTION_STREAM"
LIVENESS = 10.0
EARLIEST = {"auto.offset.reset": "earliest"}
READ_TIMEOUT = 1.0
# (endpoint, HTTP version): every way the client speaks to ksqlDB.
WAYS = [("query-stream", "HTTP/1.1"), ("query-stream", "HTTP/2"), ("query", "HTTP/1.1"),
        ("query", "HTTP/2")]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=15, preload=400, preload_days=1, partitions=4) as sb:
        yield sb


def make_client(sandbox: Sandbox, api: str, version: str) -> KsqlDBClient:
    transport = CurlTransport(sandbox.url, http2=version == "HTTP/2", read_timeout=READ_TIMEOUT)
    return KsqlDBClient(transport, api=api, max_retries=2, backoff_base=0.01)  # type: ignore[arg-type]


@pytest.fixture(params=WAYS, ids=[f"{a}-{v}" for a, v in WAYS])
def client(request: pytest.FixtureRequest, sandbox: Sandbox) -> Iterator[KsqlDBClient]:
    """One endpoint and HTTP version; the sandbox's faults are cleared afterwards."""
    c = make_client(sandbox, *request.param)
    c.way = request.param  # type: ignore[attr-defined]
    yield c
    c.close()
    sandbox.clear_faults()


@pytest.fixture
def stream_client(sandbox: Sandbox) -> Iterator[KsqlDBClient]:
    """/query-stream over HTTP/1.1 only: for what does not depend on the endpoint."""
    c = make_client(sandbox, "query-stream", "HTTP/1.1")
    yield c
    c.close()
    sandbox.clear_faults()


def truth(sandbox: Sandbox) -> list[dict[str, Any]]:
    """The sandbox's rows with their offset: the position within their partition."""
    seen: Counter[int] = Counter()
    rows = []
    for row in sandbox.rows(SOURCE):
        partition = row["ROWPARTITION"]
        rows.append({**row, "ROWOFFSET": seen[partition]})
        seen[partition] += 1
    return rows


def key(row: Mapping[str, Any]) -> tuple[int, int, int, str]:
    return row["ROWPARTITION"], row["ROWOFFSET"], row["ROWTIME"], row["TRANSACTION_ID"]


def take(query: PushQuery, count: int) -> list[dict[str, Any]]:
    """At least ``count`` rows; fails if they have not all come within LIVENESS seconds."""
    rows: list[dict[str, Any]] = []
    give_up = time.monotonic() + LIVENESS
    while len(rows) < count:
        assert time.monotonic() < give_up, f"{len(rows)} of {count} rows within {LIVENESS} s"
        batch = query.next_batch(timeout=0.2)
        if batch is not None:
            rows.extend(batch.to_pylist())
    return rows


def drain(query: PushQuery) -> tuple[list[dict[str, Any]], Exception]:
    """Every row until the body's end, and the exception that reported the end."""
    rows: list[dict[str, Any]] = []
    give_up = time.monotonic() + LIVENESS
    while True:
        assert time.monotonic() < give_up, f"no end within {LIVENESS} s after {len(rows)} rows"
        try:
            batch = query.next_batch(timeout=0.2)
        except (PushQueryEnded, KsqlDBStreamError) as exc:
            return rows, exc
        if batch is not None:
            rows.extend(batch.to_pylist())


def wait_until_closed(sandbox: Sandbox, query_id: str) -> None:
    give_up = time.monotonic() + LIVENESS
    while query_id in sandbox.app.queries:
        assert time.monotonic() < give_up, f"{query_id} still runs in the sandbox"
        time.sleep(0.02)


def test_new_rows_arrive_one_at_a_time(client: KsqlDBClient, sandbox: Sandbox) -> None:
    """From `latest`, a row produced after the query started arrives alone, nothing behind it
    to push it out of a buffer, with the sandbox's partition and offset; then another."""
    with client.push(sql.push_after(SOURCE, {}, None)) as query:
        assert query.http_version == client.way[1]  # type: ignore[attr-defined]
        assert query.query_id is not None and query.query_id.startswith(f"transient_{SOURCE}_")
        for _ in range(2):
            assert sandbox.generate(1) == 1
            (row,) = take(query, 1)
            assert key(row) == key(truth(sandbox)[-1])
        assert query.state == "running"


def test_schema_and_values_from_earliest(client: KsqlDBClient, sandbox: Sandbox) -> None:
    """Pseudo columns first (INTEGER, BIGINT, BIGINT), then every column typed as a pull
    query types it, every value equal to the sandbox's; the body ends after /close-query."""
    with client.push(sql.push_after(SOURCE, {}, None), properties=EARLIEST) as query:
        rows = take(query, len(sandbox.rows(SOURCE)))
        query.close_query()
        rest, end = drain(query)
        assert isinstance(end, PushQueryEnded) and query.state == "ended"
        schema = query.schema
    assert schema.names[:3] == ["ROWPARTITION", "ROWOFFSET", "ROWTIME"]
    assert schema.types[:3] == [pa.int32(), pa.int64(), pa.int64()]
    expected = wire_truth(sandbox.arrow(SOURCE))
    got = pa.Table.from_pylist(rows + rest, schema=schema)
    assert got.select(expected.column_names).schema.types == expected.schema.types
    assert sorted(map(key, rows + rest)) == sorted(map(key, truth(sandbox)))
    by_id = "TRANSACTION_ID"
    assert (got.select(expected.column_names).sort_by(by_id).to_pylist()
            == expected.sort_by(by_id).to_pylist())


@pytest.mark.parametrize("offsets, watermark", [
    ({0: 10, 1: 0, 2: 57}, None),  # partition 3 has no offset yet: all of it
    ({}, "median"),  # switched from batch mode: after the watermark everywhere
    ({0: 3, 3: 20}, "median"),  # after the offsets, and after the start time everywhere
    ({0: 10**6, 1: 10**6, 2: 10**6, 3: 10**6}, None),  # nothing after the committed point
])
def test_offset_predicate_keeps_exactly_the_rows_after(
    stream_client: KsqlDBClient, sandbox: Sandbox, offsets: dict[int, int],
    watermark: str | None,
) -> None:
    """``sql.push_after`` selects exactly the rows after each committed offset (every row of
    a partition without one) that are also after the start time, in every partition (truth:
    the sandbox's rows)."""
    rows = truth(sandbox)
    mark = sorted(r["ROWTIME"] for r in rows)[len(rows) // 2] if watermark else None

    def after(row: dict[str, Any]) -> bool:
        if mark is not None and row["ROWTIME"] <= mark:
            return False
        committed = offsets.get(row["ROWPARTITION"])
        return committed is None or bool(row["ROWOFFSET"] > committed)

    expected = sorted(key(r) for r in rows if after(r))
    assert 0 <= len(expected) < len(rows)
    text = sql.push_after(SOURCE, offsets, mark)
    with stream_client.push(text, properties=EARLIEST) as query:
        got = take(query, len(expected))
        query.close_query()  # the body then ends after every row the sandbox sent
        rest, end = drain(query)
    assert isinstance(end, PushQueryEnded)
    assert sorted(map(key, got + rest)) == expected


def test_close_sends_close_query_and_ends_the_body(
    client: KsqlDBClient, sandbox: Sandbox
) -> None:
    """Leaving the block sends /close-query (the sandbox takes the fault set on that path)
    and the query stops on the server; the query reports itself closed."""
    sandbox.inject("latency", path="/close-query", seconds=0.01)
    with client.push(sql.push_after(SOURCE, {}, None)) as query:
        query_id = query.query_id
        assert query_id in sandbox.app.queries
    assert query.state == "closed"
    assert sandbox.app.faults.pending() == []  # /close-query reached the sandbox
    wait_until_closed(sandbox, query_id)
    with pytest.raises(PushQueryEnded):
        query.next_batch(timeout=0)


def test_limit_ends_the_body_cleanly(client: KsqlDBClient) -> None:
    """A body that ksqlDB just ends (here at LIMIT) is PushQueryEnded, after every row."""
    text = f"SELECT ROWPARTITION, ROWOFFSET, ROWTIME, * FROM {SOURCE} EMIT CHANGES LIMIT 5;"
    with client.push(text, properties=EARLIEST) as query:
        rows, end = drain(query)
        assert isinstance(end, PushQueryEnded) and query.state == "ended"
        with pytest.raises(PushQueryEnded):  # and again on every later call
            query.next_batch(timeout=0)
    assert len(rows) == 5


@pytest.mark.parametrize("fault", ["cut_after_rows", "error_after_rows"])
def test_a_broken_body_is_not_an_end(
    client: KsqlDBClient, sandbox: Sandbox, fault: str
) -> None:
    """A body cut mid-row (connection dropped, or a stream ended inside a row) or ended by
    ksqlDB's error line is a KsqlDBStreamError, after the whole rows before it."""
    path = "/query" if client.way[0] == "query" else "/query-stream"  # type: ignore[attr-defined]
    sandbox.inject(fault, rows=7, path=path)
    with client.push(sql.push_after(SOURCE, {}, None), properties=EARLIEST) as query:
        rows, end = drain(query)
        assert type(end) is KsqlDBStreamError and query.state == "broken"
        assert "7 whole rows" in str(end) or "after 7 rows" in str(end)
    if fault == "error_after_rows":
        assert end.error_code == 50000  # type: ignore[attr-defined]
    assert len(rows) == 7
    known = set(map(key, truth(sandbox)))
    assert set(map(key, rows)) <= known


@pytest.mark.parametrize("api", ["query-stream", "query"])
def test_silence_longer_than_the_read_timeout_is_normal(sandbox: Sandbox, api: str) -> None:
    """A push query idle for longer than ksqldb.read_timeout stays open, and then still
    delivers the next row."""
    c = make_client(sandbox, api, "HTTP/1.1")
    try:
        with c.push(sql.push_after(SOURCE, {}, None)) as query:
            assert query.next_batch(timeout=READ_TIMEOUT * 2.5) is None
            sandbox.generate(1)
            (row,) = take(query, 1)
            assert key(row) == key(truth(sandbox)[-1])
    finally:
        c.close()


@pytest.mark.parametrize("how, ended", [("end", PushQueryEnded), ("drop", KsqlDBStreamError)])
def test_a_server_ending_its_queries_is_an_end_or_a_break(
    client: KsqlDBClient, sandbox: Sandbox, how: str, ended: type[Exception]
) -> None:
    """ksqlDB restarting, as the client may see it: every running body completed ("end", the
    sandbox's end_queries) or its connection dropped ("drop"); the rows before it are whole."""
    if how == "drop" and client.way == ("query-stream", "HTTP/2"):  # type: ignore[attr-defined]
        # The sandbox cannot reset an h2 stream: its "drop" ends it on a row boundary, which
        # a delimited body cannot tell from an end (sandbox README, what it leaves out).
        ended = PushQueryEnded
    with client.push(sql.push_after(SOURCE, {}, None), properties=EARLIEST) as query:
        before = take(query, len(sandbox.rows(SOURCE)))
        assert sandbox.end_queries(how) >= 1
        rows, end = drain(query)
        assert type(end) is ended
    assert sorted(map(key, before + rows)) == sorted(map(key, truth(sandbox)))
