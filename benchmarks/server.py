"""A loopback server that answers every ``POST /query-stream`` with one canned body.

It frames the body the way ksqlDB 0.29 does (``DelimitedQueryStreamResponseWriter`` makes one
``response.write`` per row and Vert.x sends each write as its own chunk or frame):

- ``rows`` (HTTP/1.1): the header line as one chunk, then one chunk per row;
- ``h2c`` (HTTP/2 with prior knowledge): one DATA frame for the header line, one per row;
- ``large`` (HTTP/1.1): 4 MiB chunks, the old benchmark framing (reported beside, never instead).

It must never be the bottleneck: the framed bytes are computed once per body and cached on
disk, then sent with ``os.sendfile`` in large pieces (the kernel copies; no per-row Python on
the serving side). On h2c the server honours the client's flow-control windows, sending whole
frames as far as the windows allow. The SQL is ignored; ``GET /info`` answers a ksqlDB version
and ``POST /ksql`` (lakeexportd's DESCRIBE of the feed's source) says BENCH is a stream.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Literal

import hpack
import numpy as np

Framing = Literal["rows", "h2c", "large"]
FRAMINGS: tuple[Framing, ...] = ("rows", "h2c", "large")
CHUNK = 4 << 20
SEND = 4 << 20  # bytes per sendfile call
INFO = b'{"KsqlServerInfo":{"version":"0.29.0","serverStatus":"RUNNING"}}'
DESCRIBE = (b'[{"@type":"sourceDescription","statementText":"DESCRIBE BENCH;",'
            b'"sourceDescription":{"name":"BENCH","type":"STREAM","fields":[],'
            b'"topic":"bench","timestamp":"","windowType":null,"statement":""}}]')
DELIMITED = b"application/vnd.ksqlapi.delimited.v1"
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_STREAM = 1  # every connection carries one request, the client's first stream


def _lines(body: Path) -> Callable[[], list[bytes]]:
    """Reads the body's lines in slices of about 64 MiB (each line ends with its newline)."""
    handle = open(body, "rb")

    def next_slice() -> list[bytes]:
        lines = handle.readlines(64 << 20)
        if not lines:
            handle.close()
        return lines

    return next_slice


def chunked_rows(body: Path) -> Path:
    """``body`` as HTTP/1.1 chunks, one per line, with the last chunk; cached beside it."""
    path = body.with_suffix(".h1rows")
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    read = _lines(body)
    with open(tmp, "wb") as out:
        while lines := read():
            out.write(b"".join(b"%x\r\n%b\r\n" % (len(line), line) for line in lines))
        out.write(b"0\r\n\r\n")
    tmp.rename(path)
    return path


def h2_frames(body: Path) -> tuple[Path, np.ndarray]:
    """``body`` as HTTP/2 DATA frames on stream 1, one per line (no END_STREAM), and the end
    offset of every frame; cached beside it."""
    path = body.with_suffix(".h2rows")
    index = body.with_suffix(".h2idx.npy")
    if path.exists() and index.exists():
        return path, np.load(index)
    tmp = path.with_suffix(".tmp")
    read = _lines(body)
    sizes: list[int] = []
    stream = struct.pack(">I", _STREAM)
    with open(tmp, "wb") as out:
        while lines := read():
            out.write(b"".join(struct.pack(">I", len(line))[1:] + b"\x00\x00" + stream + line
                               for line in lines))
            sizes += [9 + len(line) for line in lines]
    ends = np.cumsum(np.asarray(sizes, np.int64))
    np.save(index, ends)
    tmp.rename(path)
    return path, ends


class CannedServer:
    """Serves ``body`` on 127.0.0.1 (a free port) from a background thread."""

    def __init__(self, body: Path, framing: Framing = "rows") -> None:
        self.body = body
        self.framing: Framing = framing
        self.http2 = framing == "h2c"
        if framing == "h2c":
            frames, ends = h2_frames(body)
            handler = _h2c_handler(frames, ends)
        else:
            handler = _h1_handler(chunked_rows(body) if framing == "rows" else None, body)
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


def _sendfile(sock: socket.socket, path: Path, start: int, end: int) -> None:
    with open(path, "rb") as f:
        offset = start
        while offset < end:
            offset += os.sendfile(sock.fileno(), f.fileno(), offset, min(SEND, end - offset))


def _h1_handler(framed: Path | None, body: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(INFO)))
            self.end_headers()
            self.wfile.write(INFO)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/ksql":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(DESCRIBE)))
                self.end_headers()
                self.wfile.write(DESCRIBE)
                return
            self.send_response(200)
            self.send_header("Content-Type", DELIMITED.decode())
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            sock: socket.socket = self.connection
            # Small chunk headers between large sendfile calls would wait out Nagle's delay.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if framed is not None:
                _sendfile(sock, framed, 0, framed.stat().st_size)
            else:
                size = body.stat().st_size
                for offset in range(0, size, CHUNK):
                    n = min(CHUNK, size - offset)
                    sock.sendall(b"%x\r\n" % n)
                    _sendfile(sock, body, offset, offset + n)
                    sock.sendall(b"\r\n")
                sock.sendall(b"0\r\n\r\n")
            self.close_connection = True

    return Handler


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(
        ">I", stream) + payload


class _H2Peer:
    """The client's side of one h2c connection, read frame by frame (no HPACK needed beyond
    the request's HEADERS, which are ignored: every request gets the same answer)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.stream_window = 65_535  # the client's initial window, until its SETTINGS say more
        self.conn_window = 65_535
        self.request_done = False
        self.path = b""
        self._hpack = hpack.Decoder()
        self.closed = False

    def read_frames(self, block: bool) -> None:
        self.sock.setblocking(block)
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        finally:
            self.sock.setblocking(True)
        if not data:
            self.closed = True
            return
        self.buffer += data
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                break
            kind, flags = self.buffer[3], self.buffer[4]
            stream = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
            payload = self.buffer[9:9 + length]
            self.buffer = self.buffer[9 + length:]
            self._frame(kind, flags, stream, payload)

    def _frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if kind == 0x4 and not flags & 0x1:  # SETTINGS: adopt INITIAL_WINDOW_SIZE, ack
            for i in range(0, len(payload), 6):
                key, value = struct.unpack(">HI", payload[i:i + 6])
                if key == 0x4:
                    self.stream_window += value - 65_535
            self.sock.sendall(_frame(0x4, 0x1, 0))
        elif kind == 0x8:  # WINDOW_UPDATE
            step = int.from_bytes(payload, "big") & 0x7FFFFFFF
            if stream == 0:
                self.conn_window += step
            else:
                self.stream_window += step
        elif kind == 0x6 and not flags & 0x1:  # PING
            self.sock.sendall(_frame(0x6, 0x1, 0, payload))
        elif kind in (0x1, 0x0):  # HEADERS / DATA of the request
            if kind == 0x1:
                # Skip the pad length and the priority fields when their flags are set.
                skip = (1 if flags & 0x8 else 0) + (5 if flags & 0x20 else 0)
                pad = payload[0] if flags & 0x8 else 0
                block = payload[skip:len(payload) - pad]
                headers = dict(self._hpack.decode(block, raw=True))
                self.path = headers.get(b":path", b"")
            if flags & 0x1:
                self.request_done = True
        elif kind in (0x3, 0x7):  # RST_STREAM, GOAWAY
            self.closed = True


def _h2c_handler(frames: Path, ends: np.ndarray) -> type[BaseHTTPRequestHandler]:
    starts = np.concatenate([[0], ends[:-1]])
    # Flow control counts payload bytes: the frame's size minus its 9-byte header.
    payload_ends = ends - 9 * np.arange(1, len(ends) + 1)

    class Handler(BaseHTTPRequestHandler):
        def setup(self) -> None:
            self.connection = self.request  # raw socket; no rfile/wfile wrappers

        def handle(self) -> None:
            sock: socket.socket = self.connection
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            preface = b""
            while len(preface) < len(_PREFACE):
                data = sock.recv(len(_PREFACE) - len(preface))
                if not data:
                    return
                preface += data
            if preface != _PREFACE:
                return
            # Our SETTINGS (defaults) and a bigger connection window for requests we ignore.
            sock.sendall(_frame(0x4, 0, 0))
            peer = _H2Peer(sock)
            while not peer.request_done and not peer.closed:
                peer.read_frames(block=True)
            if peer.closed:
                return
            answers = {b"/info": INFO, b"/ksql": DESCRIBE}
            if peer.path in answers:
                headers = b"\x88"  # :status 200 (static table index 8), nothing else needed
                sock.sendall(_frame(0x1, 0x4, _STREAM, headers))
                sock.sendall(_frame(0x0, 0x1, _STREAM, answers[peer.path]))
            else:
                self._rows(peer)
            try:
                while not peer.closed:  # until the client hangs up (GOAWAY or FIN)
                    peer.read_frames(block=True)
            except OSError:
                pass

        def _rows(self, peer: _H2Peer) -> None:
            sock = peer.sock
            # :status 200 and content-type as a literal without indexing (static name 31).
            ctype = bytes([0x0F, 0x10, len(DELIMITED)]) + DELIMITED
            sock.sendall(_frame(0x1, 0x4, _STREAM, b"\x88" + ctype))
            sent_payload = 0
            i = 0
            with open(frames, "rb") as f:
                while i < len(ends) and not peer.closed:
                    window = min(peer.stream_window, peer.conn_window)
                    # The last frame that fits in the window, at most SEND bytes on.
                    j = int(np.searchsorted(payload_ends, sent_payload + window, "right"))
                    j = min(j, int(np.searchsorted(ends, starts[i] + SEND, "right")), len(ends))
                    if j <= i:
                        peer.read_frames(block=True)
                        continue
                    offset, end = int(starts[i]), int(ends[j - 1])
                    while offset < end:
                        offset += os.sendfile(sock.fileno(), f.fileno(), offset, end - offset)
                    used = int(payload_ends[j - 1]) - sent_payload
                    sent_payload += used
                    peer.stream_window -= used
                    peer.conn_window -= used
                    i = j
                    peer.read_frames(block=False)
            if not peer.closed:
                sock.sendall(_frame(0x0, 0x1, _STREAM))  # END_STREAM

        def finish(self) -> None:
            pass

    return Handler
