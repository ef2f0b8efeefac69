"""The transport seam: what the client needs of an HTTP connection, and httpx behind it.

``Transport`` opens a request and returns a ``Response`` once its header has arrived;
``curl_stream.CurlTransport`` is the one the daemon uses. ``HttpxTransport`` puts an
``httpx.Client`` behind the same interface (the unit tests' seam: ``httpx.MockTransport``),
its errors turned into ``TransportFailure`` with the same kinds as libcurl's, so the client
handles one set of failures. httpx is imported only when one is used.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal, Protocol

from lakeexportd.ksqldb.curl_stream import TransportFailure

if TYPE_CHECKING:
    import httpx


class Response(Protocol):
    """An answer whose header has arrived: what ``curl_stream.CurlResponse`` offers."""

    status_code: int
    http_version: str

    def iter_raw(self, *, idle_marks: bool = False) -> Iterator[bytes]: ...

    def read(self) -> bytes: ...

    def close(self) -> None: ...


class Transport(Protocol):
    """Opens requests; failures before the header and in the body are ``TransportFailure``."""

    base_url: str
    scheme: str

    def open(
        self, method: str, path: str, *, headers: dict[str, str], body: bytes | None = None,
        cancel: threading.Event | None = None, idle_body: bool = False,
    ) -> Response: ...

    def close(self) -> None: ...


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


class HttpxTransport:
    """An ``httpx.Client`` behind the ``Transport`` interface (its errors as
    ``TransportFailure``): the seam for tests with ``httpx.MockTransport``."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.base_url = str(http.base_url).rstrip("/")
        self.scheme = http.base_url.scheme

    def open(
        self, method: str, path: str, *, headers: dict[str, str], body: bytes | None = None,
        cancel: threading.Event | None = None,  # unit tests' answers come at once
        idle_body: bool = False,
    ) -> Response:
        import httpx

        try:
            request = self.http.build_request(method, path, content=body, headers=headers)
            if idle_body:  # a push query: silence is no failure (the client's timeouts stay)
                timeout = dict(request.extensions.get("timeout", {}), read=None)
                request.extensions["timeout"] = timeout
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

    def iter_raw(self, *, idle_marks: bool = False) -> Iterator[bytes]:
        """httpx cannot tell whether more bytes wait, so each block counts as all there is."""
        import httpx

        try:
            for block in self.response.iter_raw():
                yield block
                if idle_marks:
                    yield b""
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


def _tls_problem(exc: BaseException) -> str | None:
    """The SSL error behind a transport failure, if there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None
