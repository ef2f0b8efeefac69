"""The sandbox frames query answers as ksqlDB does (wire reference 3.3 "Chunking"): on
/query-stream the header line is one HTTP/1.1 chunk (HTTP/2: one DATA frame) and every row
is one more; /query table pulls are buffered. Read off the raw socket: a hand-written HTTP/1.1
request with the chunks counted by hand, and h2c frames counted with the ``h2`` library."""

from __future__ import annotations

from wire import h1_chunks, h2c_frames

from lakeexportd.sandbox import Sandbox


def one_line_each(parts: list[bytes]) -> bool:
    return all(p.endswith(b"\n") and p.count(b"\n") == 1 for p in parts)


def test_stream_pull_is_one_chunk_per_row_over_http1(sandbox: Sandbox) -> None:
    """Header line, then each row: one chunk each, every chunk one whole line."""
    chunks = h1_chunks(sandbox.url, "/query-stream", {"sql": "SELECT * FROM TRANSACTION_FLATTENED;"})
    assert len(chunks) == 1 + 2000
    assert chunks[0].startswith(b'{"queryId":') and chunks[1].startswith(b"[")
    assert one_line_each(chunks)


def test_stream_pull_is_one_data_frame_per_row_over_h2c(sandbox: Sandbox) -> None:
    """Over h2c the same answer is one DATA frame per line."""
    frames = h2c_frames(sandbox.url, "/query-stream",
                        {"sql": "SELECT ROWTIME, * FROM TRANSACTION_STREAM LIMIT 300;"})
    assert len(frames) == 1 + 300
    assert frames[0].startswith(b'{"queryId":') and one_line_each(frames)


def test_push_and_table_pull_are_one_chunk_per_row_too(sandbox: Sandbox) -> None:
    """A push query (replayed from earliest, with LIMIT) and a table pull on /query-stream."""
    push = h1_chunks(sandbox.url, "/query-stream", {
        "sql": "SELECT * FROM TRANSACTION_FLATTENED EMIT CHANGES LIMIT 25;",
        "properties": {"auto.offset.reset": "earliest"}})
    assert len(push) == 1 + 25 and one_line_each(push)
    table = h1_chunks(sandbox.url, "/query-stream", {"sql": "SELECT * FROM USER_SUMMARY;"})
    rows = len(sandbox.table("USER_SUMMARY"))
    assert rows > 1 and len(table) == 1 + rows and one_line_each(table)


def test_legacy_query_stream_pull_is_one_chunk_per_element(sandbox: Sandbox) -> None:
    """/query writes push and stream pull elements as they come: one chunk each, its `,\\n`
    after it (JsonStreamedRowResponseWriter#writeBuffer), so each row is a whole line."""
    chunks = h1_chunks(sandbox.url, "/query", {"ksql": "SELECT * FROM TRANSACTION_FLATTENED LIMIT 40;"},
                       accept="application/vnd.ksql.v1+json")
    body = b"".join(chunks)
    assert body.startswith(b'[{"header"') and body.endswith(b'{"finalMessage":"Limit Reached"}]')
    assert len(chunks) == 1 + 40 + 1
    assert chunks[0].endswith(b"}},\n")
    assert all(c.startswith(b'{"row"') and c.endswith(b"]}},\n") for c in chunks[1:-1])


def test_legacy_table_pull_is_buffered(sandbox: Sandbox) -> None:
    """/query table pulls are buffered (50 KiB flushes in 0.29.0), not one chunk per row."""
    chunks = h1_chunks(sandbox.url, "/query", {"ksql": "SELECT * FROM USER_SUMMARY;"},
                       accept="application/vnd.ksql.v1+json")
    rows = b"".join(chunks).count(b'{"row"')
    assert rows == len(sandbox.table("USER_SUMMARY"))
    assert len(chunks) < rows and all(len(c) <= 50 * 1024 + 4096 for c in chunks)


def test_trickle_still_splits_rows_into_small_chunks(fresh: object) -> None:
    """The trickle fault keeps working on top of the row framing: chunks of chunk_bytes."""
    sb = fresh(preload=50)  # type: ignore[operator]
    sb.inject("trickle", seconds=0.0, chunk_bytes=40, path="/query-stream")
    chunks = h1_chunks(sb.url, "/query-stream", {"sql": "SELECT * FROM TRANSACTION_FLATTENED LIMIT 5;"})
    body = b"".join(chunks)
    assert body.count(b"\n") == 6 and max(len(c) for c in chunks) <= 40
    assert len(chunks) >= len(body) // 40
