"""Query answers read off the raw socket, each chunk or DATA frame as it was framed on the wire:
a hand-written HTTP/1.1 request with the chunks split by hand, and h2c frames with ``h2``."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.settings


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def h1_chunks(url: str, path: str, body: dict[str, object],
              accept: str = "application/vnd.ksqlapi.delimited.v1") -> list[bytes]:
    """The chunks of a chunked HTTP/1.1 answer, each as it was framed on the wire."""
    payload = json.dumps(body).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: sandbox\r\nAccept: {accept}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
               "Connection: close\r\n\r\n").encode() + payload
    with socket.create_connection(_address(url), timeout=20) as sock:
        sock.sendall(request)
        data = b""
        while block := sock.recv(1 << 16):
            data += block
            if data.endswith(b"0\r\n\r\n"):
                break
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    chunks: list[bytes] = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return chunks
        chunks.append(rest[:size])
        assert rest[size:size + 2] == b"\r\n"
        rest = rest[size + 2:]


def h2c_frames(url: str, path: str, body: dict[str, object],
               big_windows: bool = True) -> list[bytes]:
    """The DATA frames of an h2c (prior knowledge) answer, each as it was framed; with
    ``big_windows`` false the client keeps HTTP/2's 64 KiB default windows."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    if big_windows:  # large enough that flow control never splits a row across frames
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 30})
        conn.increment_flow_control_window(1 << 30)
    payload = json.dumps(body).encode()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [(":method", "POST"), (":path", path), (":scheme", "http"),
                               (":authority", "sandbox"), ("content-type", "application/json"),
                               ("accept", "application/vnd.ksqlapi.delimited.v1")])
    conn.send_data(stream, payload, end_stream=True)
    frames: list[bytes] = []
    with socket.create_connection(_address(url), timeout=20) as sock:
        sock.sendall(conn.data_to_send())
        done = False
        while not done:
            block = sock.recv(1 << 16)
            assert block, "connection closed before the stream ended"
            for event in conn.receive_data(block):
                if isinstance(event, h2.events.ResponseReceived):
                    assert dict(event.headers)[b":status"] == b"200"
                elif isinstance(event, h2.events.DataReceived):
                    if event.data:
                        frames.append(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamEnded):
                    done = True
            sock.sendall(conn.data_to_send())
    return frames


class H1Stream:
    """A chunked HTTP/1.1 answer read chunk by chunk as it arrives, for bodies that do not end
    by themselves (push queries): ``chunk`` waits for the next one, ``silent`` proves that
    nothing at all (no keep-alive byte, no empty chunk) arrives for a while."""

    def __init__(self, url: str, path: str, body: dict[str, object],
                 accept: str = "application/vnd.ksqlapi.delimited.v1") -> None:
        payload = json.dumps(body).encode()
        request = (f"POST {path} HTTP/1.1\r\nHost: sandbox\r\nAccept: {accept}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                   "\r\n").encode() + payload
        self.sock = socket.create_connection(_address(url), timeout=20)
        self.sock.sendall(request)
        self._buffer = b""
        head = self._until(b"\r\n\r\n", 20)
        self.status = int(head.split(b" ", 2)[1])
        self.head = head.lower()

    def close(self) -> None:
        self.sock.close()

    def _more(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        block = self.sock.recv(1 << 16)  # socket.timeout (a TimeoutError) when nothing comes
        if not block:
            raise ConnectionError("connection closed in the middle of the chunked body")
        self._buffer += block

    def _until(self, mark: bytes, timeout: float) -> bytes:
        while mark not in self._buffer:
            self._more(timeout)
        data, _, self._buffer = self._buffer.partition(mark)
        return data

    def _exactly(self, size: int, timeout: float) -> bytes:
        while len(self._buffer) < size:
            self._more(timeout)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def chunk(self, timeout: float = 20) -> bytes:
        """The next chunk's data; b"" is the last chunk (the body ended properly)."""
        size = int(self._until(b"\r\n", timeout), 16)
        data = self._exactly(size, timeout)
        assert self._exactly(2, timeout) == b"\r\n"
        return data

    def silent(self, seconds: float) -> bool:
        """True when not one byte arrives for ``seconds`` (and none is waiting)."""
        if self._buffer:
            return False
        try:
            self._more(seconds)
        except TimeoutError:
            return True
        return False

    def __enter__(self) -> H1Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class H2Stream:
    """The same over h2c (prior knowledge): ``frames`` returns the DATA frames that arrive
    next (and whether the stream ended), ``silent`` that no HTTP/2 frame at all (not even a
    PING) arrives for a while."""

    def __init__(self, url: str, path: str, body: dict[str, object]) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(self.stream, [
            (":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "sandbox"),
            ("content-type", "application/json"),
            ("accept", "application/vnd.ksqlapi.delimited.v1")])
        self.conn.send_data(self.stream, json.dumps(body).encode(), end_stream=True)
        self.sock = socket.create_connection(_address(url), timeout=20)
        self.sock.sendall(self.conn.data_to_send())
        self.status = 0
        self.ended = False

    def close(self) -> None:
        self.sock.close()

    def _receive(self, block: bytes) -> list[bytes]:
        frames: list[bytes] = []
        for event in self.conn.receive_data(block):
            if isinstance(event, h2.events.ResponseReceived):
                self.status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                if event.data:
                    frames.append(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, self.stream)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended = True
        self.sock.sendall(self.conn.data_to_send())
        return frames

    def frames(self, timeout: float = 20) -> list[bytes]:
        """Wait for at least one DATA frame or the end of the stream; what arrived."""
        self.sock.settimeout(timeout)
        frames: list[bytes] = []
        while not frames and not self.ended:
            block = self.sock.recv(1 << 16)
            assert block, "connection closed before the stream ended"
            frames += self._receive(block)
        return frames

    def silent(self, seconds: float) -> bool:
        self.sock.settimeout(seconds)
        try:
            block = self.sock.recv(1 << 16)
        except TimeoutError:
            return True
        self._receive(block)
        return False

    def __enter__(self) -> H2Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
