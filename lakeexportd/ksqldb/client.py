"""KsqlDBClient: the only module that speaks HTTP to ksqlDB (with ``curl_stream``).

Queries go to ``POST /query-stream`` in the delimited format (HTTP/1.1 chunked, or h2c with
prior knowledge), or to the legacy ``POST /query`` for servers older than 0.24
(``versions``). Rows arrive as Arrow tables, decoded block by block while the body streams in
(``result.QueryResult``), so memory never holds the whole answer. Push queries (``push``)
hand their rows over as they arrive and never end by themselves (``push.PushQuery``).
Statements go to ``POST /ksql``; ``catalog`` reads what they answer.

The transport is libcurl (``curl_stream.CurlTransport``, what ``client_from_settings`` builds)
for every request: ksqlDB sends one HTTP chunk per row, which only a native HTTP parser drains
at speed, and one TLS stack for all requests means a certificate setting that works for /info
works for the rows. An ``httpx.Client`` is still accepted (the unit tests' seam:
``transport.HttpxTransport``); httpx is imported only then.

Every request goes through ``retry.RetryingSender``: failures before the header are retried,
then raised as ``KsqlDBUnavailable``. Once rows flow, any break is a ``KsqlDBStreamError``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from lakeexportd.errors import KsqlDBProtocolError
from lakeexportd.ksqldb import catalog, sql
from lakeexportd.ksqldb.catalog import ServerInfo, SourceDescription, SourceInfo
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.ksqldb.framing import DEFAULT_BLOCK_BYTES, DelimitedStream, StreamedRowStream
from lakeexportd.ksqldb.push import READ_AHEAD_TABLES, PushQuery
from lakeexportd.ksqldb.result import QueryResult
from lakeexportd.ksqldb.retry import RequestObserver, RetryingSender
from lakeexportd.ksqldb.transport import HttpxTransport, Transport
from lakeexportd.ksqldb.versions import supports_query_stream

if TYPE_CHECKING:
    import httpx

    from lakeexportd.config.model import KsqlDBSettings

Api = Literal["auto", "query-stream", "query"]
DELIMITED = "application/vnd.ksqlapi.delimited.v1"
STREAMED_ROWS = "application/vnd.ksql.v1+json"


def client_from_settings(
    settings: KsqlDBSettings, *, observer: RequestObserver | None = None
) -> KsqlDBClient:
    """The client a configuration describes (``ksqldb:`` section of the YAML)."""
    password = settings.password.reveal() if settings.password is not None else None
    transport = CurlTransport(
        settings.url,
        username=settings.username,
        password=password,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        http2=settings.http2,
        verify=settings.tls.verify,
        ca_file=str(settings.tls.ca_file) if settings.tls.ca_file else None,
        cert_file=str(settings.tls.cert_file) if settings.tls.cert_file else None,
        key_file=str(settings.tls.key_file) if settings.tls.key_file else None,
    )
    return KsqlDBClient(
        transport, api=settings.api, max_retries=settings.max_retries, observer=observer
    )


class KsqlDBClient:
    """Talks to one ksqlDB server through a ``CurlTransport`` or an ``httpx.Client``."""

    def __init__(
        self,
        http: CurlTransport | httpx.Client,
        *,
        api: Api = "auto",
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        observer: RequestObserver | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.transport: Transport = (
            http if isinstance(http, CurlTransport) else HttpxTransport(http)
        )
        self.api: Api = api
        self.block_bytes = block_bytes
        self._sender = RetryingSender(
            self.transport, max_retries=max_retries, backoff_base=backoff_base,
            backoff_max=backoff_max, observer=observer, sleep=sleep,
        )
        self._resolved_api: Literal["query-stream", "query"] | None = None if api == "auto" else api

    def close(self) -> None:
        self.transport.close()

    # -- queries ---------------------------------------------------------------------------

    @contextmanager
    def query(
        self,
        sql: str,
        *,
        properties: dict[str, Any] | None = None,
        batch_size: int = 10_000,
        cancel: threading.Event | None = None,
    ) -> Iterator[QueryResult]:
        """Run a query; ``batches()`` of the result yields record batches of ≤ batch_size rows."""
        api = self._query_api(cancel)
        if api == "query-stream":
            path, accept = "/query-stream", DELIMITED
            body: dict[str, Any] = {"sql": sql, "properties": properties or {}}
            decoder: DelimitedStream | StreamedRowStream = DelimitedStream(
                block_bytes=self.block_bytes, what=f"query {_short(sql)}"
            )
        else:
            path, accept = "/query", STREAMED_ROWS
            body = {"ksql": sql, "streamsProperties": properties or {}}
            decoder = StreamedRowStream(block_bytes=self.block_bytes, what=f"query {_short(sql)}")
        with self._sender.send(
            "POST", path, json_body=body, accept=accept, what=f"query {_short(sql)}",
            cancel=cancel,
        ) as response:
            result = QueryResult(response, decoder, batch_size, cancel)
            result.read_header()
            yield result

    @contextmanager
    def push(
        self,
        sql: str,
        *,
        properties: dict[str, Any] | None = None,
        read_ahead: int = READ_AHEAD_TABLES,
        cancel: threading.Event | None = None,
    ) -> Iterator[PushQuery]:
        """Start a push query (``sql.push_after``); rows come from ``next_batch`` as they
        arrive, and leaving the block closes it (``/close-query``, then the connection).

        Same endpoints and HTTP versions as ``query``; the body has no read timeout (see
        ``push``). ``cancel`` ends the wait for the answer's header (shutdown).
        """
        what = f"push query {_short(sql)}"
        api = self._query_api(cancel)
        if api == "query-stream":
            path, accept = "/query-stream", DELIMITED
            body: dict[str, Any] = {"sql": sql, "properties": properties or {}}
            decoder: DelimitedStream | StreamedRowStream = DelimitedStream(
                block_bytes=self.block_bytes, what=what
            )
        else:
            path, accept = "/query", STREAMED_ROWS
            body = {"ksql": sql, "streamsProperties": properties or {}}
            decoder = StreamedRowStream(block_bytes=self.block_bytes, what=what)
        with self._sender.send(
            "POST", path, json_body=body, accept=accept, what=what, cancel=cancel,
            idle_body=True,
        ) as response:
            query = PushQuery(
                response, decoder, close_query=self.close_query, read_ahead=read_ahead,
                cancel=cancel,
            )
            try:
                query.start()
                yield query
            finally:
                query.close()

    def _query_api(
        self, cancel: threading.Event | None = None
    ) -> Literal["query-stream", "query"]:
        if self._resolved_api is None:
            version = self.info(cancel=cancel).version
            self._resolved_api = "query-stream" if supports_query_stream(version) else "query"
        return self._resolved_api

    # -- catalog and server ----------------------------------------------------------------

    def list_sources(self) -> list[SourceInfo]:
        """Every stream and table, from ``SHOW STREAMS;`` and ``SHOW TABLES;``."""
        return catalog.sources(self.ksql(sql.list_sources()))

    def describe(
        self, source: str, *, cancel: threading.Event | None = None
    ) -> SourceDescription:
        """``DESCRIBE <source>;``: the columns with their ksqlDB types."""
        entities = self.ksql(sql.describe(source), cancel=cancel)
        return catalog.description(entities, source=source)

    def info(self, *, cancel: threading.Event | None = None) -> ServerInfo:
        """``GET /info``."""
        with self._sender.send("GET", "/info", what="GET /info", cancel=cancel) as response:
            return catalog.server_info(_json(response.read(), "GET /info"))

    def ksql(
        self, statements: str, *, cancel: threading.Event | None = None
    ) -> list[dict[str, Any]]:
        """``POST /ksql`` with one or more statements; returns the entity list."""
        what = f"statement {_short(statements)}"
        with self._sender.send(
            "POST", "/ksql", json_body={"ksql": statements}, accept=STREAMED_ROWS, what=what,
            cancel=cancel,
        ) as response:
            data = _json(response.read(), what)
        if not isinstance(data, list):
            raise KsqlDBProtocolError(f"{what}: expected a JSON array, got {str(data)[:120]}")
        return data

    def close_query(self, query_id: str) -> None:
        with self._sender.send(
            "POST", "/close-query", json_body={"queryId": query_id}, what="close-query"
        ) as r:
            r.read()


def _short(sql: str, limit: int = 80) -> str:
    text = " ".join(sql.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise KsqlDBProtocolError(f"{what}: answer is not JSON: {data[:120]!r}") from exc
