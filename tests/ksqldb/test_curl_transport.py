"""The libcurl transport (what the daemon uses) against the real sandbox on 127.0.0.1: read
timeout as silence between bytes, shutdown while ksqlDB is silent, closing from another thread,
the metrics hook, retries of connection failures, and what the transport reports."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import structlog
from lakecheck import Recorder

from lakeexportd.errors import ExportAborted, KsqlDBStreamError, KsqlDBUnavailable
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport, TransportFailure
from lakeexportd.sandbox import Sandbox

QUERY = "SELECT * FROM TRANSACTION_FLATTENED LIMIT 4;"
HEADERS = {"Accept": "application/vnd.ksqlapi.delimited.v1", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=5, preload=300, preload_days=1) as sb:
        yield sb


@pytest.fixture(autouse=True)
def _clear(sandbox: Sandbox) -> Iterator[None]:
    yield
    sandbox.clear_faults()


def rows(client: KsqlDBClient, sql: str = QUERY, cancel: threading.Event | None = None) -> int:
    with client.query(sql, cancel=cancel) as result:
        return sum(b.num_rows for b in result.batches())


@pytest.mark.parametrize("http2", [False, True], ids=["HTTP/1.1", "h2c"])
def test_read_timeout_is_silence_between_bytes(sandbox: Sandbox, http2: bool) -> None:
    """Five writes 0.4 s apart take longer than a 1 s read timeout and still succeed; one
    silence of 1.5 s after the header fails as a read timeout, not as a short answer."""
    client = KsqlDBClient(CurlTransport(sandbox.url, http2=http2, read_timeout=1.0),
                          api="query-stream", max_retries=0)
    sandbox.inject("trickle", seconds=0.4, chunk_bytes=1 << 20, path="/query-stream")
    assert rows(client) == 4
    sandbox.inject("trickle", seconds=1.5, chunk_bytes=1 << 20, path="/query-stream")
    with pytest.raises(KsqlDBStreamError, match="read timeout"):
        rows(client)


def test_shutdown_aborts_a_run_while_ksqldb_is_silent(sandbox: Sandbox) -> None:
    """A set cancel ends the wait on a silent answer (header sent, then nothing for 20 s)."""
    client = KsqlDBClient(CurlTransport(sandbox.url, read_timeout=60), api="query-stream")
    sandbox.inject("trickle", seconds=20, chunk_bytes=1 << 20, path="/query-stream")
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(ExportAborted, match="stopped by shutdown"):
        rows(client, cancel=cancel)
    assert time.monotonic() - started < 10  # not the 20 s of silence


def test_close_from_another_thread_ends_the_body(sandbox: Sandbox) -> None:
    """close() while another thread waits in iter_raw(): the reader stops with a failure."""
    sandbox.inject("trickle", seconds=20, chunk_bytes=1 << 20, path="/query-stream")
    response = CurlTransport(sandbox.url).open(
        "POST", "/query-stream", headers=HEADERS, body=b'{"sql": "%s"}' % QUERY.encode())
    assert response.status_code == 200 and response.http_version == "HTTP/1.1"
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.extend(response.iter_raw())
        except TransportFailure as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)
    response.close()
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert isinstance(outcome[-1], TransportFailure) and "closed" in str(outcome[-1])


@pytest.mark.parametrize("http2", [False, True], ids=["HTTP/1.1", "h2c"])
def test_observer_sees_every_answer_and_retry(sandbox: Sandbox, http2: bool) -> None:
    """The metrics hook gets each HTTP status and each retry, over both HTTP versions."""
    recorder = Recorder()
    client = KsqlDBClient(CurlTransport(sandbox.url, http2=http2), api="query-stream",
                          observer=recorder, max_retries=3, sleep=lambda s: None)
    sandbox.inject("status", status=503, count=1, path="/query-stream")
    assert rows(client) == 4
    assert client.info().version.startswith("0.29")
    assert recorder.requests == [("/query-stream", "503"), ("/query-stream", "200"),
                                 ("/info", "200")]
    assert recorder.retries == ["/query-stream"]


def test_refused_connection_is_retried_then_unavailable() -> None:
    """Nothing listening: retried with backoff, then KsqlDBUnavailable naming the URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recorder = Recorder()
    delays: list[float] = []
    client = KsqlDBClient(CurlTransport(f"http://127.0.0.1:{port}", connect_timeout=2),
                          api="query-stream", observer=recorder, max_retries=2,
                          backoff_base=0.5, sleep=delays.append)
    with pytest.raises(KsqlDBUnavailable, match=f"cannot reach ksqlDB at http://127.0.0.1:{port} "
                                                 r"\(ConnectError: .*gave up after 3 attempts"):
        rows(client)
    assert recorder.requests == [("/query-stream", "error")] * 3
    assert len(delays) == 2 and 0 <= delays[0] <= 0.5 and 0 <= delays[1] <= 1.0  # full jitter


def test_auto_api_reads_info_then_query_stream_over_h2c(sandbox: Sandbox) -> None:
    """api: auto asks /info for the version first; rows then come over h2c."""
    recorder = Recorder()
    client = KsqlDBClient(CurlTransport(sandbox.url, http2=True), observer=recorder)
    with client.query(QUERY) as result:
        assert result.http_version == "HTTP/2"
        assert sum(b.num_rows for b in result.batches()) == 4
    assert [endpoint for endpoint, _ in recorder.requests] == ["/info", "/query-stream"]


def test_password_is_not_in_the_transport_repr() -> None:
    transport = CurlTransport("http://127.0.0.1:1", username="u", password="s3cret-pw")
    assert "s3cret-pw" not in repr(transport)


def test_a_server_that_never_answers_times_out_on_the_read_timeout() -> None:
    """Connected (the kernel accepts into the backlog) but silent: the read timeout ends it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        client = KsqlDBClient(CurlTransport(url, read_timeout=0.5, connect_timeout=5),
                              api="query-stream", max_retries=0)
        with pytest.raises(KsqlDBUnavailable, match="ReadTimeout: no data from the server"):
            rows(client)


def test_shutdown_ends_the_wait_for_a_header_that_never_comes(sandbox: Sandbox) -> None:
    """ksqlDB silent before its header (latency fault): a set cancel aborts within the wake
    interval, with no further attempt, instead of waiting out the read timeout and retries."""
    recorder = Recorder()
    client = KsqlDBClient(CurlTransport(sandbox.url, read_timeout=30), api="query-stream",
                          max_retries=3, observer=recorder)
    sandbox.inject("latency", seconds=20, path="/query-stream")
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(ExportAborted, match="stopped by shutdown while waiting for ksqlDB's answer"):
        rows(client, cancel=cancel)
    assert time.monotonic() - started < 2 and recorder.retries == []


def test_retries_are_logged_and_shutdown_ends_the_backoff() -> None:
    """Each retry is a ksqldb.retry event (endpoint, attempt, wait, cause); a set cancel ends a
    long backoff at once with no new attempt."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"  # nothing listens: refused
    cancel = threading.Event()

    class ShutdownAtFirstRetry(Recorder):
        def retry(self, endpoint: str) -> None:
            super().retry(endpoint)
            cancel.set()  # shutdown arrives as the first backoff begins

    client = KsqlDBClient(CurlTransport(url), api="query-stream", max_retries=5,
                          backoff_base=20, backoff_max=20, observer=ShutdownAtFirstRetry())
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs, pytest.raises(ExportAborted, match="before retry 1"):
        rows(client, cancel=cancel)
    assert time.monotonic() - started < 3
    (retry,) = [e for e in logs if e["event"] == "ksqldb.retry"]
    assert retry["endpoint"] == "/query-stream" and retry["attempt"] == 1 and retry["of"] == 6
    assert 0 <= retry["wait_s"] <= 20 and "ConnectError" in retry["cause"]
