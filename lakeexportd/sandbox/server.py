"""Run the sandbox app under Hypercorn (HTTP/1.1 chunked and h2c prior-knowledge on one port).

Each ASGI body message goes out as one HTTP/1.1 chunk (h11 does that) and, with the stream
buffer below, as one HTTP/2 DATA frame: the framing ksqlDB gives its rows.

``build`` wires catalog, feeder, faults and app from plain settings; ``serve`` runs it on an
already-bound socket until a shutdown event fires, so callers choose threads or signals.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import hypercorn.protocol.h2
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from hypercorn.typing import Event as IOEvent

from lakeexportd.sandbox.app import SandboxApp
from lakeexportd.sandbox.catalog import Catalog
from lakeexportd.sandbox.faults import Fault, FaultSet
from lakeexportd.sandbox.feeder import Feeder
from lakeexportd.sandbox.generator import TransactionGenerator


class _WritePerFrameBuffer(hypercorn.protocol.h2.StreamBuffer):
    """Hypercorn's HTTP/2 stream buffer, but a DATA frame never spans two ASGI body messages.

    Hypercorn joins whatever the app sent into frames of up to the maximum frame size; ksqlDB
    (Vert.x) sends each ``response.write`` as its own DATA frame, so a query's rows arrive one
    frame per row (wire reference 3.3). A message larger than the frame size or the window
    is still split, as Vert.x would.
    """

    def __init__(self, event_class: type[IOEvent]) -> None:
        super().__init__(event_class)
        self._writes: collections.deque[int] = collections.deque()

    async def push(self, data: bytes) -> None:
        if data:
            self._writes.append(len(data))
        await super().push(data)

    async def pop(self, max_length: int) -> bytes:
        if self._writes:
            max_length = min(max_length, self._writes[0])
        data = await super().pop(max_length)
        if data and self._writes:
            self._writes[0] -= len(data)
            if self._writes[0] <= 0:
                self._writes.popleft()
        return data

    async def close(self) -> None:
        self._writes.clear()
        await super().close()


hypercorn.protocol.h2.StreamBuffer = _WritePerFrameBuffer  # type: ignore[misc]


@dataclass(frozen=True)
class TLSFiles:
    """Serve HTTPS (ALPN h2 and http/1.1, as ksqlDB's listener); ``client_ca`` requires client
    certificates signed by it (``ssl.client.authentication=REQUIRED``)."""

    cert: str
    key: str
    client_ca: str | None = None


@dataclass
class Settings:
    """Everything that shapes one sandbox run (the CLI flags and ``Sandbox.start`` arguments)."""

    host: str = "127.0.0.1"
    port: int = 8088
    seed: int = 1
    id_prefix: str = "txn_"
    rate: float = 0.0
    preload: int = 0
    preload_days: float = 7.0
    partitions: int = 4
    max_disorder_ms: int = 5_000
    credentials: tuple[str, str] | None = None
    faults: list[Fault] = field(default_factory=list)
    clock: Callable[[], float] = time.time
    tls: TLSFiles | None = None
    max_push_queries: int = 100  # ksql.max.push.queries


def build(settings: Settings) -> SandboxApp:
    catalog = Catalog(partitions=settings.partitions)
    generator = TransactionGenerator(settings.seed, disorder_ms=settings.max_disorder_ms,
                                     id_prefix=settings.id_prefix)
    feeder = Feeder(catalog, generator, settings.clock)
    if settings.preload:
        feeder.preload(settings.preload, settings.preload_days)
    return SandboxApp(catalog, feeder, FaultSet(settings.faults), rate=settings.rate,
                      credentials=settings.credentials, seed=settings.seed,
                      max_push_queries=settings.max_push_queries)


def bind(host: str, port: int) -> socket.socket:
    """Bind now, so a taken port fails before anything else starts (raises OSError)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


def hypercorn_config(sock: socket.socket, tls: TLSFiles | None = None) -> Config:
    """Hypercorn settings; takes ownership of ``sock`` (its descriptor is handed over)."""
    config = Config()
    if tls is not None:
        config.certfile, config.keyfile = tls.cert, tls.key
        if tls.client_ca:
            config.ca_certs = tls.client_ca
            config.verify_mode = ssl.CERT_REQUIRED
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("lakeexportd.sandbox.hypercorn")
    # Vert.x adds neither header; keep responses byte-comparable with ksqlDB's.
    config.include_server_header = False
    config.include_date_header = False
    # Push queries stay open until the client goes; do not hold shutdown for them.
    config.graceful_timeout = 1.0
    return config


async def serve(
    app: SandboxApp, sock: socket.socket, shutdown: asyncio.Event, tls: TLSFiles | None = None
) -> None:
    """Serve on ``sock`` until ``shutdown`` is set."""
    # Hypercorn's ASGI typing is narrower than the plain-dict protocol the app is written to.
    await hypercorn_serve(app, hypercorn_config(sock, tls),  # type: ignore[arg-type]
                          shutdown_trigger=shutdown.wait, mode="asgi")
