"""A response body on the wire: framing, trickling, aborting, and the row faults.

``Output`` owns the ASGI send calls; ``Emitter`` writes rows through a format writer and applies
the request's row faults when their row count comes up.

Framing follows ksqlDB 0.29 (wire reference 3.3 "Chunking"): a query answer makes one
``response.write`` per element (the header line, each row, an error), and Vert.x sends each
write as its own HTTP/1.1 chunk (one DATA frame on HTTP/2): ``Output(per_write=True)`` sends
each ``write`` as one ASGI body message, which Hypercorn frames the same way. Only ``/query``
table pulls are buffered (flushed every 50 KiB, ``JsonStreamedRowResponseWriter``'s
``FLUSH_SIZE_BYTES`` in 0.29.0).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from lakeexportd.sandbox.errors import PROCESSING_FAILURE, generic
from lakeexportd.sandbox.faults import ROW_KINDS, Fault
from lakeexportd.sandbox.formatting import row_formatter
from lakeexportd.sandbox.query import Plan
from lakeexportd.sandbox.writers import Writer

Send = Callable[[dict[str, Any]], Awaitable[None]]
FLUSH_BYTES = 256 * 1024
BUFFERED_TABLE_PULL_BYTES = 50 * 1024


class Output:
    """A response body: one chunk per write (a query's rows), or buffered up to
    ``flush_bytes``; trickled in small pieces when a fault asks for it."""

    def __init__(self, send: Send, trickle: Fault | None = None, http2: bool = False) -> None:
        self._send = send
        self._http2 = http2
        self._trickle = trickle
        self.flush_bytes = FLUSH_BYTES
        self._buffer: list[bytes] = []
        self._size = 0
        self.started = False

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        self.started = True

    def frame_per_write(self) -> None:
        """From now on every ``write`` is its own chunk / DATA frame, as ksqlDB sends rows."""
        self.flush_bytes = 0

    def buffer_up_to(self, size: int) -> None:
        self.flush_bytes = size

    async def write(self, data: bytes) -> None:
        if data:
            self._buffer.append(data)
            self._size += len(data)
            if self._size >= self.flush_bytes:
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
            elif kind == "end_push":  # the server ended the query, e.g. a restart
                await self.out.write(self.writer.end("completed"))
                await self.out.finish()
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
