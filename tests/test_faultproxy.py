"""The fault proxy passes requests through unchanged when no rule matches, so a fault test
fails only for its own fault: Content-Length and chunked bodies, many requests on one
kept-alive connection (on both sides), HEAD answers and the server's own statuses.

The server behind it here is a small recorder, not a store: moto stores a chunked PUT as an
empty object, which would hide what the proxy forwards.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from faultproxy import S3_SLOWDOWN, FaultProxy, Rule, error_rule


class _Recorder(BaseHTTPRequestHandler):
    """Keeps each body it receives (by path) and its connection's port; answers it back."""

    protocol_version = "HTTP/1.1"
    bodies: dict[str, bytes] = {}
    ports: set[int] = set()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib's name)
        """Quiet."""

    def _body(self) -> bytes:
        if "chunked" not in self.headers.get("Transfer-Encoding", ""):
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b""
        while size := int(self.rfile.readline().strip(), 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        return body

    def do_PUT(self) -> None:  # noqa: N802 (stdlib's name)
        self.ports.add(self.client_address[1])
        self.bodies[self.path] = self._body()
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 (stdlib's name)
        self.ports.add(self.client_address[1])
        body = self.bodies.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body or b"")

    do_HEAD = do_GET  # noqa: N815 (stdlib's name)


@pytest.fixture
def upstream() -> Iterator[str]:
    _Recorder.bodies, _Recorder.ports = {}, set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_bodies_and_keep_alive_pass_through_unchanged(upstream: str) -> None:
    """On one client connection: a Content-Length PUT, a chunked PUT, a GET and a HEAD of
    each, a 404, then a rule's SlowDown answer; the server got exactly the bytes sent, over
    one upstream connection."""
    with FaultProxy(upstream) as proxy:
        connection = http.client.HTTPConnection("127.0.0.1", urlsplit(proxy.endpoint).port,
                                                timeout=10)
        sized, chunked = b"x" * 70_000, [b"a" * 5000, b"b" * 9, b"c" * 64_000]
        connection.request("PUT", "/b/sized", body=sized)
        assert connection.getresponse().read() == b""
        connection.request("PUT", "/b/chunked", body=iter(chunked), encode_chunked=True,
                           headers={"Transfer-Encoding": "chunked"})
        answer = connection.getresponse()
        assert answer.status == 201 and answer.read() == b""
        assert _Recorder.bodies == {"/b/sized": sized, "/b/chunked": b"".join(chunked)}
        for key, expected in (("sized", sized), ("chunked", b"".join(chunked))):
            connection.request("GET", f"/b/{key}")
            assert connection.getresponse().read() == expected
            connection.request("HEAD", f"/b/{key}")
            head = connection.getresponse()
            assert head.read() == b"" and head.getheader("Content-Length") == str(len(expected))
        connection.request("GET", "/b/missing")
        missing = connection.getresponse()
        assert missing.status == 404 and missing.read() == b""
        rule, = proxy.add(error_rule("GET", "/sized$", S3_SLOWDOWN))
        connection.request("GET", "/b/sized")
        slow = connection.getresponse()
        assert slow.status == 503 and b"<Code>SlowDown</Code>" in slow.read()
        connection.close()
    assert rule.fired == 1
    assert len(proxy.seen) == 8  # every request on the one client connection, seen once
    assert len(_Recorder.ports) == 1  # and forwarded over one kept-alive upstream connection


@pytest.mark.parametrize("chunked", [False, True])
def test_a_cut_mid_body_forwards_nothing(upstream: str, chunked: bool) -> None:
    """A cut after 100 bytes closes the client's connection and the server sees nothing."""
    with FaultProxy(upstream) as proxy:
        rule, = proxy.add(Rule("PUT", "/b/cut", "cut", after_bytes=100))
        connection = http.client.HTTPConnection("127.0.0.1", urlsplit(proxy.endpoint).port,
                                                timeout=10)
        body = [b"z" * 150, b"z" * 150]
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            if chunked:
                connection.request("PUT", "/b/cut", body=iter(body), encode_chunked=True,
                                   headers={"Transfer-Encoding": "chunked"})
            else:
                connection.request("PUT", "/b/cut", body=b"".join(body))
            connection.getresponse()
        connection.close()
    assert rule.fired == 1 and _Recorder.bodies == {}
