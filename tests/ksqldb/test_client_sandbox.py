"""KsqlDBClient over libcurl (what the daemon uses) against the real sandbox server, over
HTTP/1.1 and h2c on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from lakecheck import wire_truth

from lakeexportd.errors import (
    KsqlDBAuthError,
    KsqlDBProtocolError,
    KsqlDBRequestError,
    KsqlDBStreamError,
    KsqlDBUnavailable,
)
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.sandbox import Sandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=21, preload=2000, preload_days=2) as sb:
        yield sb


@pytest.fixture(params=["HTTP/1.1", "HTTP/2"])
def client(request: pytest.FixtureRequest, sandbox: Sandbox) -> Iterator[KsqlDBClient]:
    """A client speaking one HTTP version; the sandbox's faults are cleared afterwards."""
    transport = CurlTransport(sandbox.url, http2=request.param == "HTTP/2", read_timeout=5)
    c = KsqlDBClient(transport, api="query-stream", max_retries=3, backoff_base=0.01)
    c.expected_http_version = request.param  # type: ignore[attr-defined]
    yield c
    c.close()
    sandbox.clear_faults()


def collect(client: KsqlDBClient, sql: str, **kwargs: Any) -> pa.Table:
    with client.query(sql, **kwargs) as result:
        assert result.http_version == client.expected_http_version  # type: ignore[attr-defined]
        return pa.Table.from_batches(list(result.batches()), schema=result.schema)


def test_stream_pull_query_returns_every_row_typed(client: KsqlDBClient, sandbox: Sandbox) -> None:
    """A stream pull query yields all rows, typed, over the negotiated HTTP version."""
    table = collect(client, "SELECT ROWTIME, * FROM TRANSACTION_STREAM;", batch_size=333)
    truth = wire_truth(sandbox.arrow("TRANSACTION_STREAM"))
    assert table.num_rows == truth.num_rows == 2000
    assert table.schema.types == truth.schema.types  # equal values can hide a wrong type
    key = "TRANSACTION_ID"
    assert table.sort_by(key).to_pylist() == truth.sort_by(key).to_pylist()


def test_rowtime_window_and_limit(client: KsqlDBClient, sandbox: Sandbox) -> None:
    """WHERE on ROWTIME selects the window; LIMIT stops early."""
    rowtimes = sorted(sandbox.arrow("TRANSACTION_FLATTENED").column("ROWTIME").to_pylist())
    low, high = rowtimes[100], rowtimes[900]
    table = collect(client, f"SELECT ROWTIME, TRANSACTION_ID FROM TRANSACTION_FLATTENED WHERE ROWTIME > {low} AND ROWTIME <= {high};")
    assert table.num_rows == sum(1 for r in rowtimes if low < r <= high)
    assert collect(client, "SELECT * FROM TRANSACTION_FLATTENED LIMIT 7;").num_rows == 7


def test_table_scan(client: KsqlDBClient, sandbox: Sandbox) -> None:
    """A table pull query (scan) returns the aggregate's rows, typed as the contract says."""
    table = collect(client, "SELECT * FROM PAYMENT_TOTALS;")
    truth = sandbox.arrow("PAYMENT_TOTALS").drop_columns(["ROWTIME"])
    assert table.schema.types == truth.schema.types
    assert table.to_pylist() == truth.to_pylist()  # both in key order


def test_catalog_describe_and_info(client: KsqlDBClient) -> None:
    """SHOW, DESCRIBE and /info come back in the shapes the client reads."""
    sources = {s.name: s.kind for s in client.list_sources()}
    assert sources["TRANSACTION_STREAM"] == "stream" and sources["USER_SUMMARY"] == "table"
    description = client.describe("TRANSACTION_STREAM")
    types = dict(description.columns)
    assert str(types["AMOUNT"]) == "DECIMAL(10, 2)" and types["PAYLOAD"].base == "STRUCT"
    assert client.info().version.startswith("0.29")


def test_statement_error_carries_ksqldb_code(client: KsqlDBClient) -> None:
    """An unknown source is a 400 statement error with code 40001, not retried."""
    with pytest.raises(KsqlDBRequestError) as info, client.query("SELECT * FROM NOPE;"):
        pass
    assert info.value.status == 400 and info.value.error_code == 40001


def test_rowpartition_in_pull_query_is_refused_like_ksqldb(client: KsqlDBClient) -> None:
    """The sandbox refuses ROWPARTITION in a pull query with ksqlDB's own message."""
    with pytest.raises(KsqlDBRequestError, match="ROWPARTITION"), client.query(
        "SELECT ROWPARTITION FROM TRANSACTION_STREAM;"
    ):
        pass


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_statuses_are_retried(client: KsqlDBClient, sandbox: Sandbox, status: int) -> None:
    """Two 429/5xx answers then success: the query succeeds after retries."""
    sandbox.inject("status", status=status, count=2, path="/query-stream")
    assert collect(client, "SELECT * FROM PAYMENT_TOTALS;").num_rows > 0


def test_status_storm_gives_up_as_unavailable(client: KsqlDBClient, sandbox: Sandbox) -> None:
    """A storm longer than max_retries ends as KsqlDBUnavailable naming the status."""
    sandbox.inject("status", status=503, count=10, path="/query-stream")
    with pytest.raises(KsqlDBUnavailable, match="HTTP 503"), client.query("SELECT * FROM PAYMENT_TOTALS;"):
        pass


@pytest.mark.parametrize(
    ("fault", "error", "pattern"),
    [
        ({"kind": "cut_after_rows", "rows": 500}, KsqlDBStreamError, "broke off|connection broke"),
        ({"kind": "error_after_rows", "rows": 500}, KsqlDBStreamError, "Failure in processing"),
        ({"kind": "malformed_line", "rows": 500}, KsqlDBProtocolError, "row 501"),
        ({"kind": "wrong_column_count", "rows": 500}, KsqlDBProtocolError, "row 501 has"),
    ],
)
def test_broken_answers_raise(client: KsqlDBClient, sandbox: Sandbox, fault: dict, error: type, pattern: str) -> None:  # type: ignore[type-arg]
    """A cut body, a mid-stream error object, a bad line or a short row is never a short result."""
    sandbox.inject(path="/query-stream", **fault)
    with pytest.raises(error, match=pattern):
        collect(client, "SELECT ROWTIME, * FROM TRANSACTION_FLATTENED;")


def test_latency_beyond_read_timeout_fails_and_within_succeeds(sandbox: Sandbox) -> None:
    """Silence longer than read_timeout fails; shorter latency is waited out."""
    transport = CurlTransport(sandbox.url, read_timeout=0.5)
    c = KsqlDBClient(transport, api="query-stream", max_retries=0)
    c.expected_http_version = "HTTP/1.1"  # type: ignore[attr-defined]
    try:
        sandbox.inject("latency", seconds=1.5, path="/query-stream")
        with pytest.raises((KsqlDBUnavailable, KsqlDBStreamError)):
            collect(c, "SELECT * FROM PAYMENT_TOTALS;")
        sandbox.inject("latency", seconds=0.2, path="/query-stream")
        assert collect(c, "SELECT * FROM PAYMENT_TOTALS;").num_rows > 0
    finally:
        c.close()
        sandbox.clear_faults()


def test_slow_trickle_still_decodes_exactly(client: KsqlDBClient, sandbox: Sandbox) -> None:
    """A body dribbled in tiny chunks decodes to the same rows."""
    sandbox.inject("trickle", seconds=0.001, chunk_bytes=97, path="/query-stream")
    table = collect(client, "SELECT * FROM TRANSACTION_FLATTENED LIMIT 50;")
    assert table.num_rows == 50


def test_ten_megabyte_row_is_decoded(client: KsqlDBClient, sandbox: Sandbox) -> None:
    """A 10 MB string value survives intact."""
    sandbox.inject("big_row_bytes", bytes=10_000_000, rows=3, path="/query-stream")
    table = collect(client, "SELECT * FROM TRANSACTION_FLATTENED LIMIT 10;")
    lengths = [len(v) for col in table.columns if pa.types.is_string(col.type) for v in col.to_pylist() if v]
    assert max(lengths) >= 10_000_000


def test_basic_auth_accepts_right_and_refuses_wrong_credentials() -> None:
    """With auth on, a wrong password is a KsqlDBAuthError (401); the right one works."""
    with Sandbox.start(seed=1, preload=10, user="alice", password="s3cret") as sb:
        good = KsqlDBClient(CurlTransport(sb.url, username="alice", password="s3cret"), api="query-stream")
        bad = KsqlDBClient(CurlTransport(sb.url, username="alice", password="nope"), api="query-stream")
        try:
            good.expected_http_version = "HTTP/1.1"  # type: ignore[attr-defined]
            assert collect(good, "SELECT * FROM PAYMENT_TOTALS;").num_rows > 0
            with pytest.raises(KsqlDBAuthError) as info:
                bad.info()
            assert info.value.status == 401 and "nope" not in str(info.value)
        finally:
            good.close()
            bad.close()


def test_legacy_query_endpoint_gives_the_same_rows(sandbox: Sandbox) -> None:
    """api: query reads the same rows through /query's StreamedRow format."""
    c = KsqlDBClient(CurlTransport(sandbox.url), api="query")
    c.expected_http_version = "HTTP/1.1"  # type: ignore[attr-defined]
    try:
        legacy = collect(c, "SELECT ROWTIME, * FROM TRANSACTION_FLATTENED;")
    finally:
        c.close()
    truth = wire_truth(sandbox.arrow("TRANSACTION_FLATTENED"))
    assert legacy.schema.types == truth.schema.types
    assert legacy.sort_by("TRANSACTION_ID").to_pylist() == truth.sort_by("TRANSACTION_ID").to_pylist()
