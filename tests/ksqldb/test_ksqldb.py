"""KsqlDBClient against httpx.MockTransport with byte-exact ksqlDB bodies."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from lakecheck import Recorder

from lakeexportd.errors import (
    ExportAborted,
    FeedError,
    KsqlDBAuthError,
    KsqlDBRequestError,
    KsqlDBStreamError,
    KsqlDBUnavailable,
)
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.transport import build_http_client
from lakeexportd.ksqldb.versions import supports_query_stream

HEADER = (
    b'{"queryId":"transient_S_1","columnNames":["ROWTIME","ID","AMOUNT"],'
    b'"columnTypes":["BIGINT","STRING","DECIMAL(10, 2)"]}\n'
)
ROWS = b'[1700000000000,"a",12.50]\n[1700000000001,"b",-0.01]\n[1700000000002,"c",null]\n'
INFO = b'{"KsqlServerInfo":{"version":"0.29.0","kafkaClusterId":"j3tOi6E_RtO_TMH3gBmK7A","ksqlServiceId":"default_","serverStatus":"RUNNING"}}'


Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **kwargs: object) -> tuple[KsqlDBClient, Recorder]:
    recorder = Recorder()
    http = httpx.Client(base_url="http://ksqldb.test", transport=httpx.MockTransport(handler))
    options: dict[str, object] = {"api": "query-stream", "sleep": lambda s: None}
    options.update(kwargs)
    return KsqlDBClient(http, observer=recorder, **options), recorder  # type: ignore[arg-type]


def chunked(body: bytes, size: int = 7) -> httpx.ByteStream:
    class Chunks(httpx.SyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            for i in range(0, len(body), size):
                yield body[i : i + size]

    return Chunks()  # type: ignore[return-value]


def test_query_stream_yields_typed_batches_of_at_most_batch_size() -> None:
    """Rows arrive as Arrow batches of ≤ batch_size rows, typed from columnTypes."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=chunked(HEADER + ROWS))

    c, recorder = client(handler)
    with c.query("SELECT ROWTIME, * FROM S;", batch_size=2) as result:
        assert result.query_id == "transient_S_1"
        assert str(result.schema.field("AMOUNT").type) == "decimal128(10, 2)"
        batches = list(result.batches())
    assert [b.num_rows for b in batches] == [2, 1]
    assert batches[1].to_pylist() == [{"ROWTIME": 1700000000002, "ID": "c", "AMOUNT": None}]
    request = seen[0]
    assert request.url.path == "/query-stream"
    assert request.headers["accept"] == "application/vnd.ksqlapi.delimited.v1"
    assert json.loads(request.content) == {"sql": "SELECT ROWTIME, * FROM S;", "properties": {}}
    assert recorder.requests == [("/query-stream", "200")]


def test_truncated_body_raises_after_the_rows_it_had() -> None:
    """A body that stops before its final newline raises instead of ending short."""
    c, _ = client(lambda r: httpx.Response(200, stream=chunked(HEADER + ROWS[:-3])))
    with c.query("SELECT * FROM S;") as result, pytest.raises(KsqlDBStreamError, match="broke off"):
        list(result.batches())


def test_mid_stream_error_object_raises() -> None:
    """An HTTP 200 answer that ends with an error object is a failure."""
    error = b'{"@type":"generic_error","error_code":50000,"message":"java.lang.RuntimeException: Failure in processing"}\n'
    c, _ = client(lambda r: httpx.Response(200, stream=chunked(HEADER + ROWS + error)))
    with c.query("SELECT * FROM S;") as result, pytest.raises(KsqlDBStreamError) as info:
        list(result.batches())
    assert info.value.error_code == 50000


def test_4xx_carries_ksqldb_error_code_and_message() -> None:
    """A statement error is a KsqlDBRequestError with ksqlDB's code and message, not retried."""
    body = {
        "@type": "statement_error",
        "error_code": 40001,
        "message": "SELECT column 'NOPE' cannot be resolved.\nStatement: SELECT NOPE FROM S;",
        "statementText": "SELECT NOPE FROM S;",
        "entities": [],
    }
    c, recorder = client(lambda r: httpx.Response(400, json=body))
    with pytest.raises(KsqlDBRequestError) as info, c.query("SELECT NOPE FROM S;"):
        pass
    assert info.value.error_code == 40001 and info.value.status == 400
    assert "cannot be resolved" in str(info.value)
    assert recorder.retries == []


@pytest.mark.parametrize(("status", "code"), [(401, 40100), (403, 40300)])
def test_auth_failures_are_configuration_errors(status: int, code: int) -> None:
    """401/403 become KsqlDBAuthError (a ConfigError, exit 78) with a hint."""
    body = {"@type": "generic_error", "error_code": code, "message": "Unauthorized"}
    c, _ = client(lambda r: httpx.Response(status, json=body))
    with pytest.raises(KsqlDBAuthError, match="ksqldb.username|grant") as info:
        c.info()
    assert info.value.exit_code == 78


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_statuses_are_retried_then_succeed(status: int) -> None:
    """429 and 5xx are retried with backoff; a later success is used."""
    answers = [httpx.Response(status, json={"error_code": status * 100, "message": "busy"})] * 2
    answers.append(httpx.Response(200, stream=chunked(HEADER + ROWS)))
    c, recorder = client(lambda r: answers.pop(0), max_retries=3)
    with c.query("SELECT * FROM S;") as result:
        assert sum(b.num_rows for b in result.batches()) == 3
    assert recorder.retries == ["/query-stream", "/query-stream"]
    assert [code for _, code in recorder.requests] == [str(status), str(status), "200"]


def test_retries_give_up_as_transient_with_the_last_error() -> None:
    """After max_retries the failure is KsqlDBUnavailable naming the status and the limit."""
    body = {
        "@type": "generic_error",
        "error_code": 42900,
        "message": "Host is at rate limit for pull queries. Currently set to 1.0 qps.",
    }
    delays: list[float] = []
    c, _ = client(lambda r: httpx.Response(429, json=body), max_retries=4, sleep=delays.append)
    with pytest.raises(KsqlDBUnavailable, match="rate limit.*gave up after 5 attempts"):
        c.info()
    assert len(delays) == 4
    caps = [0.5 * 2**i for i in range(4)]
    assert all(0 <= d <= cap for d, cap in zip(delays, caps))


def test_connection_failure_is_retried_then_transient() -> None:
    """A refused connection is retried and reported with the server's URL."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    c, recorder = client(handler, max_retries=2)
    with pytest.raises(KsqlDBUnavailable, match="cannot reach ksqlDB at http://ksqldb.test"):
        c.info()
    assert recorder.requests == [("/info", "error")] * 3


def test_read_timeout_mid_stream_is_a_stream_error() -> None:
    """Silence longer than the read timeout after the header fails the query."""

    class Stalls(httpx.SyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield HEADER + ROWS[:10]
            raise httpx.ReadTimeout("timed out")

    c, _ = client(lambda r: httpx.Response(200, stream=Stalls()))
    with (
        c.query("SELECT * FROM S;") as result,
        pytest.raises(KsqlDBStreamError, match="read timeout"),
    ):
        list(result.batches())


def test_catalog_and_describe() -> None:
    """SHOW STREAMS/TABLES and DESCRIBE are read from /ksql with their real shapes."""
    show = [
        {
            "@type": "streams",
            "statementText": "SHOW STREAMS;",
            "streams": [
                {
                    "type": "STREAM",
                    "name": "S1",
                    "topic": "t1",
                    "keyFormat": "KAFKA",
                    "valueFormat": "JSON",
                    "isWindowed": False,
                }
            ],
            "warnings": [],
        },
        {
            "@type": "tables",
            "statementText": "SHOW TABLES;",
            "tables": [
                {
                    "type": "TABLE",
                    "name": "T1",
                    "topic": "t2",
                    "keyFormat": "KAFKA",
                    "valueFormat": "JSON",
                    "isWindowed": False,
                }
            ],
            "warnings": [],
        },
    ]
    describe = [
        {
            "@type": "sourceDescription",
            "statementText": "DESCRIBE S1;",
            "sourceDescription": {
                "name": "S1",
                "windowType": None,
                "readQueries": [],
                "writeQueries": [],
                "fields": [
                    {
                        "name": "ID",
                        "schema": {"type": "STRING", "fields": None, "memberSchema": None},
                        "type": "KEY",
                    },
                    {
                        "name": "AMT",
                        "schema": {
                            "type": "DECIMAL",
                            "fields": None,
                            "memberSchema": None,
                            "parameters": {"precision": 4, "scale": 2},
                        },
                    },
                    {
                        "name": "TAGS",
                        "schema": {
                            "type": "ARRAY",
                            "fields": None,
                            "memberSchema": {
                                "type": "STRING",
                                "fields": None,
                                "memberSchema": None,
                            },
                        },
                    },
                    {
                        "name": "M",
                        "schema": {
                            "type": "MAP",
                            "fields": None,
                            "memberSchema": {
                                "type": "INTEGER",
                                "fields": None,
                                "memberSchema": None,
                            },
                        },
                    },
                    {
                        "name": "ADDR",
                        "schema": {
                            "type": "STRUCT",
                            "fields": [
                                {
                                    "name": "CITY",
                                    "schema": {
                                        "type": "STRING",
                                        "fields": None,
                                        "memberSchema": None,
                                    },
                                }
                            ],
                            "memberSchema": None,
                        },
                    },
                ],
                "type": "STREAM",
                "timestamp": "",
                "statistics": "",
                "errorStats": "",
                "extended": False,
                "keyFormat": "KAFKA",
                "valueFormat": "JSON",
                "topic": "t1",
                "partitions": 1,
                "replication": 1,
                "statement": "CREATE STREAM S1 (...) WITH (...);",
                "queryOffsetSummaries": [],
                "sourceConstraints": [],
                "clusterStatistics": [],
                "clusterErrorStats": [],
            },
            "warnings": [],
        }
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        ksql = json.loads(request.content)["ksql"]
        return httpx.Response(200, json=show if ksql.startswith("SHOW") else describe)

    c, _ = client(handler)
    sources = c.list_sources()
    assert [(s.name, s.kind, s.topic) for s in sources] == [
        ("S1", "stream", "t1"),
        ("T1", "table", "t2"),
    ]
    d = c.describe("S1")
    assert [(n, str(t)) for n, t in d.columns] == [
        ("ID", "STRING"),
        ("AMT", "DECIMAL(4, 2)"),
        ("TAGS", "ARRAY<STRING>"),
        ("M", "MAP<STRING, INTEGER>"),
        ("ADDR", "STRUCT<`CITY` STRING>"),
    ]
    assert d.key_columns == ("ID",) and d.kind == "stream" and d.timestamp_column is None


def test_describe_refuses_names_that_would_inject_statements() -> None:
    """A source name is checked before it is put into a statement."""
    c, _ = client(lambda r: httpx.Response(500))
    with pytest.raises(FeedError, match="no statement was sent"):
        c.describe("S1; DROP STREAM S2")


def test_auto_api_falls_back_to_legacy_query_for_old_servers() -> None:
    """api=auto reads /info and uses /query on servers older than 0.24."""
    paths: list[str] = []
    legacy = (
        b'[{"header":{"queryId":"q","schema":"`ID` STRING"}},\n'
        b'{"row":{"columns":["a"]}},\n{"finalMessage":"Query Completed"}]'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/info":
            return httpx.Response(200, content=INFO.replace(b"0.29.0", b"0.23.1"))
        assert json.loads(request.content)["ksql"] == "SELECT * FROM S;"
        return httpx.Response(200, stream=chunked(legacy))

    c, _ = client(handler, api="auto")
    with c.query("SELECT * FROM S;") as result:
        assert [b.to_pylist() for b in result.batches()] == [[{"ID": "a"}]]
    assert paths == ["/info", "/query"]


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("0.29.0", True),
        ("0.24.0", True),
        ("0.23.1", False),
        ("7.5.0", True),
        ("7.1.2", False),
        ("8.0.0", True),
        ("", True),
    ],
)
def test_query_stream_support_by_version(version: str, expected: bool) -> None:
    """ksqlDB 0.24+ (Confluent Platform 7.2+) answer /query-stream over HTTP/1.1."""
    assert supports_query_stream(version) is expected


def test_http_client_builds_auth_timeouts_and_h2c() -> None:
    """Basic auth, timeouts and the HTTP/2 switch reach the httpx client; the password is not in its repr."""
    http = build_http_client(
        "http://127.0.0.1:1",
        username="u",
        password="s3cret-pw",
        connect_timeout=3,
        read_timeout=7,
        http2=True,
    )
    assert http.timeout.connect == 3 and http.timeout.read == 7
    assert "s3cret-pw" not in repr(http) and "s3cret-pw" not in repr(http.auth)
    request = http.build_request("GET", "/info")
    flow = http.auth.sync_auth_flow(request)  # type: ignore[union-attr]
    assert next(flow).headers["authorization"].startswith("Basic ")
    http.close()


def test_cancel_ends_the_wait_on_a_silent_answer() -> None:
    """While ksqlDB sends nothing after the header, a set cancel aborts the read promptly."""
    release = threading.Event()

    class Silent(httpx.SyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield HEADER + ROWS
            release.wait(10)  # ksqlDB scanning old offsets: no bytes for a long time

    cancel = threading.Event()
    c, _ = client(lambda r: httpx.Response(200, stream=Silent()))
    started = time.monotonic()
    threading.Timer(0.3, cancel.set).start()
    try:
        with c.query("SELECT * FROM S;", cancel=cancel) as result:
            rows = 0
            with pytest.raises(ExportAborted, match="stopped by shutdown while waiting for ksqlDB"):
                for batch in result.batches():
                    rows += batch.num_rows
        assert time.monotonic() - started < 3  # not the 10 s of silence
    finally:
        release.set()
