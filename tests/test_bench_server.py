"""make bench's canned server frames a body as ksqlDB does: one HTTP/1.1 chunk per line, one
h2c DATA frame per line (flow control honoured with a small client window), or 4 MiB chunks;
and the transports get every byte back."""

from __future__ import annotations

from pathlib import Path

import pytest
from wire import h1_chunks, h2c_frames

from benchmarks.server import CannedServer
from lakeexportd.ksqldb.curl_stream import CurlTransport

HEADERS = {"Accept": "application/vnd.ksqlapi.delimited.v1", "Content-Type": "application/json"}


@pytest.fixture()
def body(tmp_path: Path) -> Path:
    lines = [b'{"queryId":"q","columnNames":["A"],"columnTypes":["STRING"]}\n']
    lines += [b'["%s"]\n' % (b"v" * (i % 300)) for i in range(2000)]
    path = tmp_path / "body.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def test_rows_framing_is_one_chunk_per_line(body: Path) -> None:
    with CannedServer(body, "rows") as server:
        chunks = h1_chunks(server.url, "/query-stream", {"sql": "x"})
    assert chunks == body.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("big_windows", [True, False])
def test_h2c_framing_is_one_data_frame_per_line(body: Path, big_windows: bool) -> None:
    """With 64 KiB windows the server waits for WINDOW_UPDATEs and still sends whole frames."""
    with CannedServer(body, "h2c") as server:
        frames = h2c_frames(server.url, "/query-stream", {"sql": "x"}, big_windows)
    assert frames == body.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("framing", ["rows", "h2c", "large"])
def test_libcurl_reads_every_byte(body: Path, framing: str) -> None:
    with CannedServer(body, framing) as server:  # type: ignore[arg-type]
        response = CurlTransport(server.url, http2=server.http2).open(
            "POST", "/query-stream", headers=HEADERS, body=b"{}")
        data = response.read()
        response.close()
    assert data == body.read_bytes()
    assert response.http_version == ("HTTP/2" if framing == "h2c" else "HTTP/1.1")
