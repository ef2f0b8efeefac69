"""The daemon's small HTTP server: ``/metrics``, ``/healthz``, ``/readyz`` and ``/status``.

``/status`` is JSON for ``lakeexportd status``: per feed, the next run and whether it runs now.

A ``ThreadingHTTPServer`` on a daemon thread: a slow scraper never blocks the scheduler, and
the thread dies with the process. It binds exactly the configured host (``[::1]`` too).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from lakeexportd.errors import LakeExportError


class MetricsServerError(LakeExportError):
    """The metrics address cannot be bound (port taken, address not on this host)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    is_ready: Callable[[], bool]
    status: Callable[[], dict[str, Any]] | None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._answer(200, b"ok\n")
        elif path == "/readyz":
            ready = self.server.is_ready()
            text = "ready\n" if ready else "not ready\n"
            if self.server.status is not None:  # realtime feeds: each push query's state
                for name, feed in sorted(self.server.status().get("feeds", {}).items()):
                    if "query" in feed:
                        text += f"realtime {name}: {feed['query']['state']}\n"
            self._answer(200 if ready else 503, text.encode())
        elif path == "/status" and self.server.status is not None:
            body = json.dumps(self.server.status(), indent=2).encode() + b"\n"
            self._answer(200, body, "application/json")
        else:
            self._answer(404, b"not found: try /metrics, /healthz, /readyz or /status\n")

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # every scrape would be a log line; Prometheus records failed scrapes itself


class MetricsServer:
    """Serves ``registry``; ``is_ready`` decides ``/readyz``."""

    def __init__(
        self, registry: CollectorRegistry, host: str, port: int, is_ready: Callable[[], bool],
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.is_ready = is_ready
        self.status = status
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the metrics server is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("_BoundServer", (_Server,), {"address_family": family})
        try:
            server = server_class((self.host, self.port), _Handler)
        except OSError as exc:
            raise MetricsServerError(
                f"cannot serve metrics on {where} (metrics.listen): {exc.strerror or exc}; "
                "stop the process using that port or set another metrics.listen"
            ) from exc
        server.registry = self.registry
        server.is_ready = self.is_ready
        server.status = self.status
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics-http",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
