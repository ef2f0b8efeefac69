"""The sandbox frames query answers as ksqlDB does (wire reference 3.3 "Chunking"): on
/query-stream the header line is one HTTP/1.1 chunk (HTTP/2: one DATA frame) and every row
is one more; /query table pulls are buffered. Read off the raw socket: a hand-written HTTP/1.1
request with the chunks counted by hand, and h2c frames counted with the ``h2`` library."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.settings

from lakeexportd.sandbox import Sandbox


def _address(sb: Sandbox) -> tuple[str, int]:
    parts = urlsplit(sb.url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def h1_chunks(sb: Sandbox, path: str, body: dict[str, object],
              accept: str = "application/vnd.ksqlapi.delimited.v1") -> list[bytes]:
    """The chunks of a chunked HTTP/1.1 answer, each as it was framed on the wire."""
    payload = json.dumps(body).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: sandbox\r\nAccept: {accept}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
               "Connection: close\r\n\r\n").encode() + payload
    with socket.create_connection(_address(sb), timeout=20) as sock:
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


def h2c_frames(sb: Sandbox, path: str, body: dict[str, object]) -> list[bytes]:
    """The DATA frames of an h2c (prior knowledge) answer, each as it was framed."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    # Windows large enough that flow control never splits a row across frames.
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 30})
    conn.increment_flow_control_window(1 << 30)
    payload = json.dumps(body).encode()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [(":method", "POST"), (":path", path), (":scheme", "http"),
                               (":authority", "sandbox"), ("content-type", "application/json"),
                               ("accept", "application/vnd.ksqlapi.delimited.v1")])
    conn.send_data(stream, payload, end_stream=True)
    frames: list[bytes] = []
    with socket.create_connection(_address(sb), timeout=20) as sock:
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


def one_line_each(parts: list[bytes]) -> bool:
    return all(p.endswith(b"\n") and p.count(b"\n") == 1 for p in parts)


def test_stream_pull_is_one_chunk_per_row_over_http1(sandbox: Sandbox) -> None:
    """Header line, then each row: one chunk each, every chunk one whole line."""
    chunks = h1_chunks(sandbox, "/query-stream", {"sql": "SELECT * FROM TRANSACTION_FLATTENED;"})
    assert len(chunks) == 1 + 2000
    assert chunks[0].startswith(b'{"queryId":') and chunks[1].startswith(b"[")
    assert one_line_each(chunks)


def test_stream_pull_is_one_data_frame_per_row_over_h2c(sandbox: Sandbox) -> None:
    """Over h2c the same answer is one DATA frame per line."""
    frames = h2c_frames(sandbox, "/query-stream",
                        {"sql": "SELECT ROWTIME, * FROM TRANSACTION_STREAM LIMIT 300;"})
    assert len(frames) == 1 + 300
    assert frames[0].startswith(b'{"queryId":') and one_line_each(frames)


def test_push_and_table_pull_are_one_chunk_per_row_too(sandbox: Sandbox) -> None:
    """A push query (replayed from earliest, with LIMIT) and a table pull on /query-stream."""
    push = h1_chunks(sandbox, "/query-stream", {
        "sql": "SELECT * FROM TRANSACTION_FLATTENED EMIT CHANGES LIMIT 25;",
        "properties": {"auto.offset.reset": "earliest"}})
    assert len(push) == 1 + 25 and one_line_each(push)
    table = h1_chunks(sandbox, "/query-stream", {"sql": "SELECT * FROM USER_SUMMARY;"})
    rows = len(sandbox.table("USER_SUMMARY"))
    assert rows > 1 and len(table) == 1 + rows and one_line_each(table)


def test_legacy_query_stream_pull_is_one_chunk_per_element(sandbox: Sandbox) -> None:
    """/query writes push and stream pull elements as they come: one chunk each."""
    chunks = h1_chunks(sandbox, "/query", {"ksql": "SELECT * FROM TRANSACTION_FLATTENED LIMIT 40;"},
                       accept="application/vnd.ksql.v1+json")
    body = b"".join(chunks)
    assert body.startswith(b'[{"header"') and body.endswith(b'{"finalMessage":"Limit Reached"}]')
    assert len(chunks) == 1 + 40 + 1
    assert all(c.startswith(b',\n{"row"') for c in chunks[1:-1])


def test_legacy_table_pull_is_buffered(sandbox: Sandbox) -> None:
    """/query table pulls are buffered (50 KiB flushes in 0.29.0), not one chunk per row."""
    chunks = h1_chunks(sandbox, "/query", {"ksql": "SELECT * FROM USER_SUMMARY;"},
                       accept="application/vnd.ksql.v1+json")
    rows = b"".join(chunks).count(b'{"row"')
    assert rows == len(sandbox.table("USER_SUMMARY"))
    assert len(chunks) < rows and all(len(c) <= 50 * 1024 + 4096 for c in chunks)


def test_trickle_still_splits_rows_into_small_chunks(fresh: object) -> None:
    """The trickle fault keeps working on top of the row framing: chunks of chunk_bytes."""
    sb = fresh(preload=50)  # type: ignore[operator]
    sb.inject("trickle", seconds=0.0, chunk_bytes=40, path="/query-stream")
    chunks = h1_chunks(sb, "/query-stream", {"sql": "SELECT * FROM TRANSACTION_FLATTENED LIMIT 5;"})
    body = b"".join(chunks)
    assert body.count(b"\n") == 6 and max(len(c) for c in chunks) <= 40
    assert len(chunks) >= len(body) // 40
