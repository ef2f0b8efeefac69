"""KsqlDBClient: the only module that speaks HTTP to ksqlDB (with ``curl_stream``).

Queries go to ``POST /query-stream`` in the delimited format (HTTP/1.1 chunked, or h2c with
prior knowledge), or to the legacy ``POST /query`` for servers older than 0.24. Rows arrive as
Arrow tables, decoded block by block while the body streams in, so memory never holds the
whole answer.

The transport is libcurl (``curl_stream.CurlTransport``, what ``client_from_settings`` builds)
for every request: ksqlDB sends one HTTP chunk per row, which only a native HTTP parser drains
at speed, and one TLS stack for all requests means a certificate setting that works for /info
works for the rows. An ``httpx.Client`` is still accepted (the unit tests' seam:
``httpx.MockTransport``); httpx is imported only then.

Failures before the header (connection errors, timeouts, 429, 5xx) are retried with exponential
backoff and full jitter up to ``max_retries``, then raised as ``KsqlDBUnavailable``. Once rows
flow, any break is a ``KsqlDBStreamError``: the caller must discard what it received.
"""

from __future__ import annotations

import json
import queue
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

import pyarrow as pa
import structlog

from lakeexportd.errors import (
    ExportAborted,
    KsqlDBAuthError,
    KsqlDBProtocolError,
    KsqlDBRequestError,
    KsqlDBStreamError,
    KsqlDBTLSError,
    KsqlDBUnavailable,
)
from lakeexportd.ksqldb.curl_stream import CurlTransport, TransportFailure
from lakeexportd.ksqldb.framing import (
    DEFAULT_BLOCK_BYTES,
    DelimitedStream,
    QueryHeader,
    StreamedRowStream,
)
from lakeexportd.ksqldb.types import KsqlType, parse_type

if TYPE_CHECKING:
    import httpx

    from lakeexportd.config.model import KsqlDBSettings

Api = Literal["auto", "query-stream", "query"]
# Decoded blocks (about 4 MiB of body each) queued ahead of the caller: one more made no
# measurable difference in speed and cost 7-14 MB of peak RSS at 5M rows.
_READ_AHEAD_TABLES = 1
# What the reader thread hands over: a decoded block, the error that ended it, or the end.
_Item: TypeAlias = "pa.Table | BaseException | None"
DELIMITED = "application/vnd.ksqlapi.delimited.v1"
STREAMED_ROWS = "application/vnd.ksql.v1+json"
log = structlog.get_logger(__name__)


class RequestObserver(Protocol):
    """Sees every HTTP answer (for ``lakeexportd_ksqldb_requests_total``) and every retry."""

    def request(self, endpoint: str, code: str) -> None: ...

    def retry(self, endpoint: str) -> None: ...


class Response(Protocol):
    """An answer whose header has arrived: what ``curl_stream.CurlResponse`` offers."""

    status_code: int
    http_version: str

    def iter_raw(self) -> Iterator[bytes]: ...

    def read(self) -> bytes: ...

    def close(self) -> None: ...


class Transport(Protocol):
    """Opens requests; failures before the header and in the body are ``TransportFailure``."""

    base_url: str
    scheme: str

    def open(
        self, method: str, path: str, *, headers: dict[str, str], body: bytes | None = None,
        cancel: threading.Event | None = None,
    ) -> Response: ...

    def close(self) -> None: ...


class _NoObserver:
    def request(self, endpoint: str, code: str) -> None:
        pass

    def retry(self, endpoint: str) -> None:
        pass


@dataclass(frozen=True)
class SourceInfo:
    """One entry of ``SHOW STREAMS`` / ``SHOW TABLES``."""

    name: str
    kind: Literal["stream", "table"]
    topic: str
    key_format: str
    value_format: str
    is_windowed: bool


@dataclass(frozen=True)
class SourceDescription:
    """What ``DESCRIBE`` says about a source: its columns (key columns first) and more."""

    name: str
    kind: Literal["stream", "table"]
    columns: tuple[tuple[str, KsqlType], ...]
    key_columns: tuple[str, ...]
    topic: str
    timestamp_column: str | None
    window_type: str | None
    statement: str


@dataclass(frozen=True)
class ServerInfo:
    version: str
    kafka_cluster_id: str
    service_id: str
    status: str | None


def build_http_client(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 300.0,
    http2: bool = False,
    verify: bool = True,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> httpx.Client:
    """An ``httpx.Client`` for a ksqlDB server: auth, TLS, timeouts and HTTP version (the
    daemon uses ``CurlTransport``, which takes the same arguments)."""
    import httpx

    tls: ssl.SSLContext | bool = verify
    if verify:
        tls = (
            ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        )
        if cert_file:
            tls.load_cert_chain(cert_file, key_file)
    auth = httpx.BasicAuth(username, password or "") if username else None
    timeout = httpx.Timeout(connect_timeout, read=read_timeout, write=connect_timeout, pool=None)
    # httpx speaks h2c over http:// only with HTTP/1.1 turned off; http2=True alone stays on 1.1.
    h2c = http2 and url.startswith("http://")
    return httpx.Client(
        base_url=url,
        auth=auth,
        verify=tls,
        timeout=timeout,
        http1=not h2c,
        http2=http2,
        follow_redirects=False,
    )


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
            http if isinstance(http, CurlTransport) else _HttpxTransport(http)
        )
        self.api: Api = api
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.block_bytes = block_bytes
        self._observer: RequestObserver = observer or _NoObserver()
        self._sleep = sleep
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
        with self._send(
            "POST", path, json_body=body, accept=accept, what=f"query {_short(sql)}",
            cancel=cancel,
        ) as response:
            result = QueryResult(response, decoder, batch_size, cancel)
            result.read_header()
            yield result

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
        entities = self.ksql("SHOW STREAMS; SHOW TABLES;")
        sources: list[SourceInfo] = []
        for entity in entities:
            for key in ("streams", "tables"):
                for s in entity.get(key) or []:
                    sources.append(
                        SourceInfo(
                            name=s["name"],
                            kind="stream" if s.get("type") == "STREAM" else "table",
                            topic=s.get("topic", ""),
                            key_format=s.get("keyFormat", ""),
                            value_format=s.get("valueFormat", ""),
                            is_windowed=bool(s.get("isWindowed")),
                        )
                    )
        return sources

    def describe(
        self, source: str, *, cancel: threading.Event | None = None
    ) -> SourceDescription:
        """``DESCRIBE <source>;``: the columns with their ksqlDB types."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*|`[^`]+`", source):
            raise ValueError(f"{source!r} is not a ksqlDB source name")
        entities = self.ksql(f"DESCRIBE {source};", cancel=cancel)
        desc = entities[0].get("sourceDescription") if entities else None
        if not isinstance(desc, dict):
            raise KsqlDBProtocolError(f"DESCRIBE {source}: answer has no sourceDescription")
        columns: list[tuple[str, KsqlType]] = []
        keys: list[str] = []
        for f in desc.get("fields", []):
            columns.append((f["name"], schema_info_type(f["schema"], column=f["name"])))
            if f.get("type") == "KEY":
                keys.append(f["name"])
        return SourceDescription(
            name=desc["name"],
            kind="table" if desc.get("type") == "TABLE" else "stream",
            columns=tuple(columns),
            key_columns=tuple(keys),
            topic=desc.get("topic", ""),
            timestamp_column=desc.get("timestamp") or None,
            window_type=desc.get("windowType"),
            statement=desc.get("statement", ""),
        )

    def info(self, *, cancel: threading.Event | None = None) -> ServerInfo:
        """``GET /info``."""
        with self._send("GET", "/info", what="GET /info", cancel=cancel) as response:
            data = _json(response.read(), "GET /info")
        info = data.get("KsqlServerInfo", {}) if isinstance(data, dict) else {}
        return ServerInfo(
            version=str(info.get("version", "")),
            kafka_cluster_id=str(info.get("kafkaClusterId", "")),
            service_id=str(info.get("ksqlServiceId", "")),
            status=info.get("serverStatus"),
        )

    def ksql(
        self, statements: str, *, cancel: threading.Event | None = None
    ) -> list[dict[str, Any]]:
        """``POST /ksql`` with one or more statements; returns the entity list."""
        what = f"statement {_short(statements)}"
        with self._send(
            "POST", "/ksql", json_body={"ksql": statements}, accept=STREAMED_ROWS, what=what,
            cancel=cancel,
        ) as response:
            data = _json(response.read(), what)
        if not isinstance(data, list):
            raise KsqlDBProtocolError(f"{what}: expected a JSON array, got {str(data)[:120]}")
        return data

    def close_query(self, query_id: str) -> None:
        with self._send(
            "POST", "/close-query", json_body={"queryId": query_id}, what="close-query"
        ) as r:
            r.read()

    # -- transport -------------------------------------------------------------------------

    @contextmanager
    def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json_body: dict[str, Any] | None = None,
        accept: str = "application/json",
        cancel: threading.Event | None = None,
    ) -> Iterator[Response]:
        """Open a streamed response with a 2xx status, retrying transient failures first.

        A set ``cancel`` (shutdown past stop_grace) means no new attempt: the wait for a
        header, a backoff and the retry loop all end within 0.2 s with ``ExportAborted``.
        """
        content = json.dumps(json_body).encode() if json_body is not None else None
        headers = {"Accept": accept}
        if content is not None:
            headers["Content-Type"] = "application/json"
        base_url = self.transport.base_url
        attempt = 0
        while True:
            failure: str
            try:
                response = self.transport.open(
                    method, path, headers=headers, body=content, cancel=cancel
                )
            except TransportFailure as exc:
                if exc.kind == "aborted":
                    raise ExportAborted(
                        f"{what}: stopped by shutdown while waiting for ksqlDB's answer "
                        f"(attempt {attempt + 1}); nothing was published"
                    ) from exc
                self._observer.request(path, "error")
                if exc.kind == "tls":
                    raise KsqlDBTLSError(
                        f"{what}: TLS with ksqlDB at {base_url} failed ({exc}); check "
                        "ksqldb.tls.ca_file (the CA that signed the server's certificate), "
                        "cert_file/key_file if the server requires a client certificate, "
                        "and that the URL's host name matches the certificate"
                    ) from exc
                failure = f"cannot reach ksqlDB at {base_url} ({exc})"
                if self.transport.scheme == "https" and exc.kind == "connect":
                    # TLS 1.3 servers that require a client certificate just hang up.
                    failure += (
                        "; if the server requires a client certificate, set "
                        "ksqldb.tls.cert_file and key_file"
                    )
            else:
                self._observer.request(path, str(response.status_code))
                if response.status_code < 300:
                    try:
                        yield response
                    finally:
                        response.close()
                    return
                body = _read_error_body(response)
                code, message = _error_fields(body)
                if response.status_code in (401, 403):
                    raise KsqlDBAuthError(response.status_code, code, message, what=what)
                if response.status_code != 429 and response.status_code < 500:
                    raise KsqlDBRequestError(response.status_code, code, message, what=what)
                failure = (
                    f"ksqlDB answered HTTP {response.status_code} error_code {code}: {message}"
                )
            if attempt >= self.max_retries:
                raise KsqlDBUnavailable(
                    f"{what}: {failure}; gave up after {attempt + 1} attempts "
                    f"(ksqldb.max_retries = {self.max_retries})"
                )
            attempt += 1
            self._observer.retry(path)
            delay = random.uniform(
                0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
            )
            log.warning("ksqldb.retry", endpoint=path, attempt=attempt,
                        of=self.max_retries + 1, wait_s=round(delay, 3), cause=failure)
            if cancel is not None:
                if cancel.wait(delay):
                    raise ExportAborted(
                        f"{what}: stopped by shutdown before retry {attempt} ({failure}); "
                        "nothing was published"
                    )
            else:
                self._sleep(delay)


class _HttpxTransport:
    """An ``httpx.Client`` behind the ``Transport`` interface (its errors as
    ``TransportFailure``): the seam for tests with ``httpx.MockTransport``."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.base_url = str(http.base_url).rstrip("/")
        self.scheme = http.base_url.scheme

    def open(
        self, method: str, path: str, *, headers: dict[str, str], body: bytes | None = None,
        cancel: threading.Event | None = None,  # unit tests' answers come at once
    ) -> Response:
        import httpx

        try:
            request = self.http.build_request(method, path, content=body, headers=headers)
            return _HttpxResponse(self.http.send(request, stream=True))
        except httpx.TransportError as exc:
            raise _httpx_failure(exc) from exc

    def close(self) -> None:
        self.http.close()


class _HttpxResponse:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status_code = response.status_code
        self.http_version = response.http_version

    def iter_raw(self) -> Iterator[bytes]:
        import httpx

        try:
            yield from self.response.iter_raw()
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise _httpx_failure(exc) from exc

    def read(self) -> bytes:
        import httpx

        try:
            return self.response.read()
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise _httpx_failure(exc) from exc

    def close(self) -> None:
        self.response.close()


def _httpx_failure(exc: Exception) -> TransportFailure:
    import httpx

    tls = _tls_problem(exc)
    if tls is not None:
        return TransportFailure("tls", tls)
    kind: Literal["timeout", "connect"] = (
        "timeout" if isinstance(exc, httpx.TimeoutException) else "connect"
    )
    return TransportFailure(kind, f"{type(exc).__name__}: {exc}")


class QueryResult:
    """A running query: ``schema`` once the header is read, then ``batches()``."""

    def __init__(
        self,
        response: Response,
        decoder: DelimitedStream | StreamedRowStream,
        batch_size: int,
        cancel: threading.Event | None = None,
    ) -> None:
        self.response = response
        self._cancel = cancel
        self.http_version = response.http_version
        self._decoder = decoder
        self._batch_size = batch_size
        self._chunks = self._raw_chunks()
        self._pending: list[pa.Table] = []
        self._finished = False
        self.rows = 0

    @property
    def header(self) -> QueryHeader:
        assert self._decoder.header is not None
        return self._decoder.header

    @property
    def schema(self) -> pa.Schema:
        assert self._decoder.decoder is not None
        return self._decoder.decoder.schema

    @property
    def query_id(self) -> str | None:
        return self.header.query_id

    @property
    def fast_rows(self) -> int:
        """Rows decoded by the native block path (the rest took the exact JSON path)."""
        return self._decoder.decoder.fast_rows if self._decoder.decoder else 0

    def _raw_chunks(self) -> Iterator[bytes]:
        what = self._decoder.what
        try:
            yield from self.response.iter_raw()
        except TransportFailure as exc:
            if exc.kind == "timeout":
                raise KsqlDBStreamError(
                    f"{what}: no data from ksqlDB for longer than the read timeout after "
                    f"{self._decoder.rows} rows; raise ksqldb.read_timeout if the source is "
                    "large"
                ) from exc
            raise KsqlDBStreamError(
                f"{what}: the connection broke after {self._decoder.rows} rows "
                f"({exc}); the rows received are not used"
            ) from exc

    def read_header(self) -> None:
        """Read until the header line is known (rows that came with it are kept)."""
        for chunk in self._chunks:
            self._pending.extend(self._decoder.feed(chunk))
            if self._decoder.header is not None:
                return
        self._finished = True
        self._pending.extend(self._decoder.finish())

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every row of the answer, in order; raises if the answer turns out incomplete.

        The body is read and decoded on a reader thread, a block ahead of the caller:
        receiving and CSV parsing then overlap the caller's routing and
        Parquet writing. Its exceptions are raised here, after the rows that came before them.
        """
        for table in self._pending:
            yield from self._split(table)
        self._pending = []
        if self._finished:
            return
        self._finished = True
        tables: queue.Queue[_Item] = queue.Queue(_READ_AHEAD_TABLES)
        stop = threading.Event()
        reader = threading.Thread(
            target=self._read, args=(tables, stop), name="ksqldb-reader", daemon=True
        )
        reader.start()
        try:
            while (item := self._next(tables)) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield from self._split(item)
        finally:
            # A caller that stops early (a failed sink) must not leave the reader running: it
            # stops at its next block. One blocked in recv wakes when data or the read timeout
            # arrive, or when query() closes the response; as a daemon it never delays exit.
            stop.set()
            reader.join(timeout=1.0)

    def _next(self, tables: queue.Queue[_Item]) -> _Item:
        """The next item; a set ``cancel`` ends the wait even while ksqlDB sends nothing (a
        stream pull query is silent while it scans old offsets), so shutdown is not held up."""
        if self._cancel is None:
            return tables.get()
        while True:
            try:
                return tables.get(timeout=0.2)
            except queue.Empty:
                if self._cancel.is_set():
                    raise ExportAborted(
                        f"{self._decoder.what}: stopped by shutdown while waiting for ksqlDB "
                        f"after {self.rows} rows; nothing was published"
                    ) from None

    def _read(self, tables: queue.Queue[_Item], stop: threading.Event) -> None:
        """The reader thread: each decoded table, then ``None``, or the exception that ended it."""
        try:
            for chunk in self._chunks:
                for table in self._decoder.feed(chunk):
                    if not _offer(tables, table, stop):
                        return
                if stop.is_set():
                    return
            for table in self._decoder.finish():
                if not _offer(tables, table, stop):
                    return
            _offer(tables, None, stop)
        except BaseException as exc:  # raised in the caller's thread by batches()
            _offer(tables, exc, stop)

    def _split(self, table: pa.Table) -> Iterator[pa.RecordBatch]:
        for batch in table.to_batches(max_chunksize=self._batch_size):
            self.rows += batch.num_rows
            yield batch


def _offer(tables: queue.Queue[_Item], item: _Item, stop: threading.Event) -> bool:
    """Put ``item`` once there is room; ``False`` if the caller stopped reading first."""
    while not stop.is_set():
        try:
            tables.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def supports_query_stream(version: str) -> bool:
    """Whether a server speaks ``/query-stream`` over HTTP/1.1 (ksqlDB 0.24+, CP 7.2+)."""
    m = re.match(r"v?(\d+)\.(\d+)", version)
    if not m:
        return True
    major, minor = int(m[1]), int(m[2])
    if major == 0:
        return minor >= 24
    if major >= 5:  # Confluent Platform numbering: CP 7.2 ships ksqlDB 0.26
        return (major, minor) >= (7, 2)
    return True


def schema_info_type(schema: dict[str, Any], *, column: str) -> KsqlType:
    """A ``DESCRIBE`` SchemaInfo object as a ``KsqlType`` (MAP keys are not exposed: STRING)."""
    base = str(schema.get("type", ""))
    if base == "DECIMAL":
        params = schema.get("parameters") or {}
        return parse_type(
            f"DECIMAL({params.get('precision')}, {params.get('scale')})", column=column
        )
    if base == "ARRAY":
        return KsqlType("ARRAY", element=schema_info_type(schema["memberSchema"], column=column))
    if base == "MAP":
        value = schema_info_type(schema["memberSchema"], column=column)
        return KsqlType("MAP", key=KsqlType("STRING"), element=value)
    if base == "STRUCT":
        fields = tuple(
            (f["name"], schema_info_type(f["schema"], column=f"{column}.{f['name']}"))
            for f in schema.get("fields") or []
        )
        return KsqlType("STRUCT", fields=fields)
    return parse_type(base, column=column)


def _tls_problem(exc: BaseException) -> str | None:
    """The SSL error behind a transport failure, if there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _short(sql: str, limit: int = 80) -> str:
    text = " ".join(sql.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise KsqlDBProtocolError(f"{what}: answer is not JSON: {data[:120]!r}") from exc


def _read_error_body(response: Response) -> bytes:
    try:
        return response.read()[:65536]
    except TransportFailure:
        return b""
    finally:
        response.close()


def _error_fields(body: bytes) -> tuple[int | None, str]:
    try:
        obj = json.loads(body)
    except ValueError:
        return None, body.decode("utf-8", "replace").strip()[:500] or "(empty body)"
    if isinstance(obj, dict):
        code = obj.get("error_code")
        return (code if isinstance(code, int) else None), str(obj.get("message", ""))
    return None, str(obj)[:500]
