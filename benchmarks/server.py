"""A loopback server that answers every ``POST /query-stream`` with one canned body.

It must never be the bottleneck: the body goes out with ``os.sendfile`` in 4 MiB chunks of
``Transfer-Encoding: chunked`` (the kernel copies; Python only writes chunk headers). The SQL
is ignored. ``GET /info`` answers a ksqlDB version so ``api: auto`` clients work too.
"""

from __future__ import annotations

import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

CHUNK = 4 << 20


class CannedServer:
    """Serves ``body`` on 127.0.0.1 (a free port) from a background thread."""

    def __init__(self, body: Path) -> None:
        self.body = body
        handler = _handler(body)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> CannedServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def _handler(body: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            data = b'{"KsqlServerInfo":{"version":"0.29.0","serverStatus":"RUNNING"}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.ksqlapi.delimited.v1")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            sock: socket.socket = self.connection
            # Small chunk headers between large sendfile calls would wait out Nagle's delay.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            size = body.stat().st_size
            with open(body, "rb") as f:
                offset = 0
                while offset < size:
                    n = min(CHUNK, size - offset)
                    sock.sendall(b"%x\r\n" % n)
                    sent = 0
                    while sent < n:
                        sent += os.sendfile(sock.fileno(), f.fileno(), offset + sent, n - sent)
                    sock.sendall(b"\r\n")
                    offset += n
            sock.sendall(b"0\r\n\r\n")
            self.close_connection = True

    return Handler
