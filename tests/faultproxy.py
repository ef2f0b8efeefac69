"""A fault-injecting HTTP/1.1 reverse proxy in front of a real object-store server (moto, Azurite).

The lake's ``endpoint`` points at the proxy (``FaultProxy.endpoint``); every request is
forwarded to the server unchanged (Host, signatures, body framing), except those a ``Rule``
matches. A rule matches a method and a regular expression searched in the path with its
query, skips its first ``skip`` matches and acts on the next ``times`` ones:

- ``answer``: reply with ``status`` and the store's own error body and headers (``s3_error``,
  ``azure_error``) without forwarding anything;
- ``cut``: read ``after_bytes`` of the request body, then close the connection (a connection
  cut mid-upload: nothing reaches the server);
- ``lose_answer``: forward the request, read the server's answer, then hold it back until the
  client gives up and hangs up (the write landed, its answer was lost);
- ``land_then_answer``: forward the request, then reply ``status`` and ``body`` instead of
  the server's answer (a gateway error after the write landed: the client retries);
- ``land_then_cut``: forward the request, then close the connection at once;
- ``late``: hold the request until the client gives up (and ``gate`` is set, if given), then
  forward it (the write lands after its writer stopped waiting);
- ``hook``: forward as is; ``hook()`` (say, another writer replacing an object on the
  server, or new rules added) is called before a rule of any action forwards its request.

Each rule counts what it matched and what it did (``Rule.fired``; ``answered`` holds the
server's statuses for what it forwarded, ``forwarded`` is set then), and the proxy keeps every
request line it saw (``FaultProxy.seen``), so a test asserts that its fault really happened.
Bodies pass through with ``Content-Length`` or ``Transfer-Encoding: chunked`` as sent, and
connections are kept alive on both sides (obstore pools them).
"""

from __future__ import annotations

import contextlib
import http.client
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

Action = Literal["answer", "cut", "lose_answer", "land_then_answer", "land_then_cut", "late",
                 "hook"]
GIVE_UP = 30.0  # seconds a held request or answer waits for its client to hang up, at most


def s3_error(code: str, message: str) -> bytes:
    """An S3 error document as S3 sends it (``<Error><Code>SlowDown</Code>...``)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>FAULTPROXY0000001</RequestId><HostId>faultproxy</HostId></Error>"
    ).encode()


def azure_error(code: str, message: str) -> bytes:
    """An Azure Storage error document (``<Error><Code>ServerBusy</Code>...``)."""
    return (
        '\ufeff<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}\n"
        "RequestId:00000000-0000-0000-0000-000000000000\n"
        "Time:2026-01-01T00:00:00.0000000Z</Message></Error>"
    ).encode()


# (status, store) -> (body, headers) as the real services answer throttling and failures.
S3_SLOWDOWN = (503, s3_error("SlowDown", "Please reduce your request rate."), {})
S3_INTERNAL = (500, s3_error("InternalError", "We encountered an internal error. Please "
                             "try again."), {})
S3_TOO_MANY = (429, s3_error("TooManyRequests", "Please reduce your request rate."), {})
AZURE_BUSY = (503, azure_error("ServerBusy", "The server is currently unable to receive "
                               "requests. Please retry your request."), {"Retry-After": "1"})
AZURE_INTERNAL = (500, azure_error("InternalError", "The server encountered an internal "
                                   "error. Please retry the request."), {})
AZURE_TOO_MANY = (429, azure_error("ServerBusy", "Ingress is over the account limit."),
                  {"Retry-After": "1"})


@dataclass
class Rule:
    """One fault: which requests (method, path regex, which occurrences) and what to do."""

    method: str
    path: str  # a regular expression searched in the path and query
    action: Action
    times: int | None = 1  # how many matches to act on (None: every one)
    skip: int = 0  # matches let through before acting
    status: int = 503
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    after_bytes: int = 0  # cut: request body bytes read before the cut
    hook: Callable[[], None] | None = None
    gate: threading.Event | None = None  # late: after the hang-up, also wait for this
    matched: int = 0
    fired: int = 0
    forwarded: threading.Event = field(default_factory=threading.Event)  # set once forwarded
    answered: list[int] = field(default_factory=list)  # the server's statuses, as forwarded

    def wants(self, method: str, target: str) -> bool:
        if method != self.method or not re.search(self.path, target):
            return False
        self.matched += 1
        if self.matched <= self.skip or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


def error_rule(method: str, path: str, answer: tuple[int, bytes, dict[str, str]], *,
               times: int | None = 1, skip: int = 0) -> Rule:
    """A rule answering ``answer`` (e.g. ``S3_SLOWDOWN``) to the matching requests."""
    status, body, headers = answer
    content = "application/xml"
    return Rule(method, path, "answer", times=times, skip=skip, status=status, body=body,
                headers={"Content-Type": content, **headers})


class _Cut(Exception):
    """The connection is to be closed now, without an answer."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib's name)
        """Quiet: the proxy's record is ``seen``."""

    def setup(self) -> None:
        super().setup()
        self.upstream: http.client.HTTPConnection | None = None
        self.server.proxy.opened(self.connection)

    def finish(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
        try:
            super().finish()
        finally:
            self.server.proxy.closed(self.connection)

    def _relay(self) -> None:
        proxy = self.server.proxy
        method, target = self.command, self.path
        rule = proxy.match(method, target)
        try:
            if rule is not None and rule.action == "answer":
                self._read_body()
                self._answer(rule.status, rule.headers, rule.body)
                return
            if rule is not None and rule.action == "cut":
                self._read_body(limit=rule.after_bytes)
                raise _Cut
            body = self._read_body()
            if rule is not None and rule.action == "late":
                self._wait_for_hang_up()
                if rule.gate is not None:
                    rule.gate.wait(GIVE_UP)
            if rule is not None and rule.hook is not None:
                rule.hook()
            status, headers, answer = self._forward(method, target, body)
            if rule is not None:
                rule.answered.append(status)
                rule.forwarded.set()
            if rule is not None and rule.action == "land_then_answer":
                self._answer(rule.status, rule.headers, rule.body)
                return
            if rule is not None and rule.action in ("lose_answer", "land_then_cut", "late"):
                if rule.action == "lose_answer":
                    self._wait_for_hang_up()
                raise _Cut
            self._answer(status, headers, answer, head=method == "HEAD")
        except _Cut:
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may have hung up already
                self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay  # noqa: N815 (stdlib's names)

    def _read_body(self, limit: int | None = None) -> bytes | list[bytes]:
        """The request body as sent: bytes (Content-Length) or chunks (chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers, up to the empty line that ends the body
                    return chunks
                data = self.rfile.read(size)
                self.rfile.readline()
                if limit is not None and sum(map(len, chunks)) + size >= limit:
                    raise _Cut
                chunks.append(data)
        length = int(self.headers.get("Content-Length", "0"))
        if limit is not None:
            self.rfile.read(min(limit, length))
            raise _Cut
        return self.rfile.read(length)

    def _wait_for_hang_up(self) -> None:
        """Block until the client closes its side (it timed out), at most ``GIVE_UP`` s."""
        end = time.monotonic() + GIVE_UP
        while time.monotonic() < end:
            ready, _, _ = select.select([self.connection], [], [], 0.05)
            if ready:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return
                except OSError:
                    return
                time.sleep(0.01)  # data, not a hang-up: should not happen mid-request

    def _forward(self, method: str, target: str,
                 body: bytes | list[bytes]) -> tuple[int, list[tuple[str, str]], bytes]:
        proxy = self.server.proxy
        if self.upstream is None:
            self.upstream = http.client.HTTPConnection(proxy.upstream_host,
                                                       proxy.upstream_port, timeout=60)
        connection = self.upstream
        for attempt in (1, 2):  # a pooled upstream connection the server closed: reopen once
            try:
                connection.putrequest(method, target, skip_host=True,
                                      skip_accept_encoding=True)
                for name, value in self.headers.items():
                    connection.putheader(name, value)
                if isinstance(body, list):
                    connection.endheaders()
                    for chunk in body:
                        connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    connection.send(b"0\r\n\r\n")
                else:
                    connection.endheaders(body if body else None)
                response = connection.getresponse()
                answer = response.read()
                headers = [(k, v) for k, v in response.getheaders()
                           if k.lower() not in ("transfer-encoding", "connection",
                                                "keep-alive")]
                if method != "HEAD":
                    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                    headers.append(("Content-Length", str(len(answer))))
                return response.status, headers, answer
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                connection.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _answer(self, status: int, headers: dict[str, str] | list[tuple[str, str]],
                body: bytes, *, head: bool = False) -> None:
        self.send_response_only(status)
        pairs = list(headers.items()) if isinstance(headers, dict) else headers
        for name, value in pairs:
            self.send_header(name, value)
        if isinstance(headers, dict):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy


class FaultProxy:
    """The proxy: ``with FaultProxy(server_endpoint) as proxy:``; ``proxy.endpoint`` is its URL
    with the server's path (Azurite's ``/devstoreaccount1``)."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname is not None and parts.port is not None, upstream
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self._path = parts.path.rstrip("/")
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str]] = []
        self._guard = threading.Lock()
        self._open: set[socket.socket] = set()  # client connections being served
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="faultproxy")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self._path}"

    def add(self, *rules: Rule) -> list[Rule]:
        with self._guard:
            self.rules.extend(rules)
        return list(rules)

    def clear(self) -> None:
        with self._guard:
            self.rules.clear()

    def match(self, method: str, target: str) -> Rule | None:
        with self._guard:
            self.seen.append((method, target))
            for rule in self.rules:
                if rule.wants(method, target):
                    return rule
        return None

    def requests(self, method: str, path: str) -> Iterator[str]:
        """The targets of the requests seen with ``method`` whose target matches ``path``."""
        with self._guard:
            seen = list(self.seen)
        return (t for m, t in seen if m == method and re.search(path, t))

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def opened(self, connection: socket.socket) -> None:
        with self._guard:
            self._open.add(connection)

    def closed(self, connection: socket.socket) -> None:
        with self._guard:
            self._open.discard(connection)

    def __exit__(self, *exc: object) -> None:
        """Stop accepting, hang up on kept-alive clients, and wait for their handlers to
        close their upstream connections (no socket is left to the garbage collector)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        with self._guard:
            still_open = list(self._open)
        for connection in still_open:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RDWR)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with self._guard:
                if not self._open:
                    return
            time.sleep(0.01)
