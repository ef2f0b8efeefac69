"""Write query results: response output with buffering and trickling, row faults, and the loops
for table pull, stream pull and push queries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from lakeexportd.sandbox.catalog import Catalog
from lakeexportd.sandbox.errors import PROCESSING_FAILURE, generic
from lakeexportd.sandbox.faults import ROW_KINDS, Fault
from lakeexportd.sandbox.formatting import row_formatter
from lakeexportd.sandbox.query import Plan, interleave
from lakeexportd.sandbox.sources import StreamSource, TableSource
from lakeexportd.sandbox.writers import Writer

Send = Callable[[dict[str, Any]], Awaitable[None]]
FLUSH_BYTES = 256 * 1024
PUSH_POLL_SECONDS = 0.05
FORMAT_IN_THREAD = 5_000  # above this many unformatted rows, format off the event loop


class Output:
    """A response body: buffered into large chunks, or trickled when a fault asks for it."""

    def __init__(self, send: Send, trickle: Fault | None = None, http2: bool = False) -> None:
        self._send = send
        self._http2 = http2
        self._trickle = trickle
        self._buffer: list[bytes] = []
        self._size = 0
        self.started = False

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        self.started = True

    async def write(self, data: bytes) -> None:
        if data:
            self._buffer.append(data)
            self._size += len(data)
            if self._size >= FLUSH_BYTES:
                await self.flush()

    async def flush(self) -> None:
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer, self._size = [], 0
        if self._trickle is None:
            await self._send({"type": "http.response.body", "body": data, "more_body": True})
            return
        step = self._trickle.chunk_bytes
        for i in range(0, len(data), step):
            await self._send({"type": "http.response.body", "body": data[i:i + step],
                              "more_body": True})
            await asyncio.sleep(self._trickle.seconds)

    async def finish(self) -> None:
        await self.flush()
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def abort(self) -> None:
        """Stop without ending the body: the server then closes the connection mid-response.

        Over HTTP/2 Hypercorn would leave the stream hanging until its idle timeout (an ASGI
        app cannot reset a stream), so there the body ends early instead; the partial last
        row without its newline is still there for the client to detect.
        """
        await self.flush()
        if self._http2:
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})


class Emitter:
    """Writes rows through the writer, applying the request's row faults at their row count."""

    def __init__(self, plan: Plan, writer: Writer, out: Output, faults: dict[str, Fault]):
        self.plan = plan
        self.writer = writer
        self.out = out
        self.faults = {k: f for k, f in faults.items() if k in ROW_KINDS}
        self.count = 0
        self.done = False  # a fault ended the response
        self._fmt: Callable[[Sequence[Any]], str] | None = None
        big = self.faults.get("big_row_bytes")
        self._big_bytes = big.bytes if big else 0

    def fmt(self, values: Sequence[Any]) -> bytes:
        if self._fmt is None:
            self._fmt = row_formatter(self.plan.types)
        return self._fmt(values).encode()

    def limit_reached(self) -> bool:
        return self.plan.limit is not None and self.count >= self.plan.limit

    async def row(self, line: bytes, values: Callable[[], list[Any]]) -> None:
        if self.faults:
            line = await self._fault(line, values)
            if self.done:
                return
        self.count += 1
        await self.out.write(self.writer.row(line))

    async def _fault(self, line: bytes, values: Callable[[], list[Any]]) -> bytes:
        due = [k for k, f in self.faults.items() if f.rows == self.count]
        for kind in due:
            del self.faults[kind]
            if kind == "cut_after_rows":
                full = self.writer.row(line)
                await self.out.write(full[: max(1, len(full) // 2)])
                await self.out.abort()
                self.done = True
            elif kind == "error_after_rows":
                await self.out.write(self.writer.error(generic(50000, PROCESSING_FAILURE)))
                await self.out.finish()
                self.done = True
            elif kind == "malformed_line":
                await self.out.write(self.writer.raw(b"this is not JSON {"))
            elif kind == "wrong_column_count":
                line = self.fmt(values()[:-1])
            elif kind == "big_row_bytes":
                row = values()
                strings = [i for i, t in enumerate(self.plan.types) if t.base == "STRING"]
                if strings:
                    row[strings[0]] = "x" * self._big_bytes
                    line = self.fmt(row)
            if self.done:
                break
        return line

    async def end(self, reason: str) -> None:
        """The normal end; faults whose row count was never reached happen here."""
        if self.done:
            return
        if "cut_after_rows" in self.faults:
            await self.out.write(b"[")
            await self.out.abort()
            return
        if "error_after_rows" in self.faults:
            await self.out.write(self.writer.error(generic(50000, PROCESSING_FAILURE)))
            await self.out.finish()
            return
        if "malformed_line" in self.faults:
            await self.out.write(self.writer.raw(b"this is not JSON {"))
        await self.out.write(self.writer.end(reason))
        await self.out.finish()


async def _lines(source: StreamSource, upto: int) -> list[bytes]:
    if source.pending_lines(upto) > FORMAT_IN_THREAD:
        return await asyncio.to_thread(source.lines, upto)
    return source.lines(upto)


async def _emit_stream_rows(plan: Plan, emitter: Emitter, source: StreamSource,
                            starts: list[int], ends: list[int], total: int,
                            stop: asyncio.Event, chunk: int) -> bool:
    """Rows between two offset vectors; False when the query must stop (limit, fault, stop)."""
    cached = plan.star or plan.rowtime_star
    lines = await _lines(source, total) if cached else []
    rows, rowtimes, where = source.rows, source.rowtimes, plan.where
    seen = 0
    for p, offset, i in interleave(source, starts, ends, chunk):
        if emitter.limit_reached():
            return False
        rt = rowtimes[i]
        stored = rows[i]
        if where is not None and not where(stored, rt, p, offset):
            continue
        if plan.star:
            line = lines[i]
        elif plan.rowtime_star:
            line = b"[" + str(rt).encode() + b"," + lines[i][1:]
        else:
            line = emitter.fmt(plan.values(stored, rt, p, offset))
        await emitter.row(line, partial(plan.values, stored, rt, p, offset))
        if emitter.done:
            return False
        seen += 1
        if seen % 2000 == 0:
            await asyncio.sleep(0)
            if stop.is_set():
                return False
    return not emitter.limit_reached()


async def run_stream_pull(plan: Plan, emitter: Emitter, catalog: Catalog,
                          stop: asyncio.Event) -> None:
    source = plan.source
    assert isinstance(source, StreamSource)
    with catalog.lock:
        ends = source.end_offsets()
        total = len(source.rows)
    await emitter.out.write(emitter.writer.header(plan))
    if plan.limit == 0:
        await emitter.end("limit")
        return
    more = await _emit_stream_rows(plan, emitter, source, [0] * len(ends), ends, total, stop,
                                   catalog.interleave_chunk)
    if emitter.done or stop.is_set():
        await _closed(emitter)
        return
    await emitter.end("completed" if more else "limit")


async def run_table_pull(plan: Plan, emitter: Emitter, catalog: Catalog) -> None:
    source = plan.source
    assert isinstance(source, TableSource)
    with catalog.lock:
        snapshot = source.snapshot()
    await emitter.out.write(emitter.writer.header(plan))
    for stored, rowtime in snapshot:
        if emitter.limit_reached():
            break
        if plan.where is not None and not plan.where(stored, rowtime, 0, 0):
            continue
        values = plan.values(stored, rowtime, 0, 0)
        await emitter.row(emitter.fmt(values), partial(list, values))
        if emitter.done:
            return
    await emitter.end("completed")


async def run_push(plan: Plan, emitter: Emitter, catalog: Catalog, stop: asyncio.Event,
                   earliest: bool) -> None:
    source = plan.source
    await emitter.out.write(emitter.writer.header(plan))
    await emitter.out.flush()
    if plan.limit == 0:
        await emitter.end("limit")
        return
    if isinstance(source, StreamSource):
        with catalog.lock:
            positions = [0] * source.partitions if earliest else source.end_offsets()
        while not stop.is_set():
            with catalog.lock:
                ends = source.end_offsets()
                total = len(source.rows)
            if not await _emit_stream_rows(plan, emitter, source, positions, ends, total, stop,
                                           catalog.interleave_chunk):
                break
            positions = ends
            await emitter.out.flush()
            await _wait(stop)
    else:
        assert isinstance(source, TableSource)
        with catalog.lock:
            pending = source.snapshot() if earliest else []
            position = source.changes
        while not stop.is_set() and not emitter.limit_reached() and not emitter.done:
            for stored, rowtime in pending:
                if emitter.limit_reached() or emitter.done:
                    break
                if plan.where is not None and not plan.where(stored, rowtime, 0, 0):
                    continue
                values = plan.values(stored, rowtime, 0, 0)
                await emitter.row(emitter.fmt(values), partial(list, values))
            await emitter.out.flush()
            if emitter.limit_reached() or emitter.done:
                break
            await _wait(stop)
            with catalog.lock:
                pending, position = source.changes_since(position)
    if emitter.done:
        return
    if emitter.limit_reached():
        await emitter.end("limit")
    else:
        await _closed(emitter)


async def _closed(emitter: Emitter) -> None:
    """Closed by /close-query or by the client: the body just ends."""
    if emitter.done:
        return
    await emitter.out.write(emitter.writer.end("closed"))
    await emitter.out.finish()


async def _wait(stop: asyncio.Event) -> None:
    try:
        await asyncio.wait_for(stop.wait(), PUSH_POLL_SECONDS)
    except TimeoutError:
        pass
