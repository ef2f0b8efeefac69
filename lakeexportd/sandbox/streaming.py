"""The query loops: table pull (a snapshot), stream pull (up to the end offsets captured at
start) and push (replay or not, then follow new rows until LIMIT, close or disconnect).

While a push query waits for rows it writes nothing at all: ksqlDB's writers have no
keep-alive (wire reference 2.3; only the pre-0.24 ``/query`` writer sent newlines).
"""

from __future__ import annotations

import asyncio
from functools import partial

from lakeexportd.sandbox.catalog import Catalog
from lakeexportd.sandbox.output import Emitter
from lakeexportd.sandbox.query import Plan, interleave
from lakeexportd.sandbox.sources import StreamSource, TableSource

PUSH_POLL_SECONDS = 0.05


class Stop(asyncio.Event):
    """Set to end a running query; ``how`` says how its body ends.

    ``closed``: ``/close-query`` or the client went away; ``end``: the server ended the query
    (a restart, or the query terminated): the body ends as a completed query's does;
    ``drop``: the connection is closed without ending the body, as when the process dies.
    """

    how = "closed"

    def end(self, how: str = "closed") -> None:
        self.how = how
        self.set()
FORMAT_IN_THREAD = 5_000  # above this many unformatted rows, format off the event loop


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


async def run_stream_pull(plan: Plan, emitter: Emitter, catalog: Catalog, stop: Stop) -> None:
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
        await _closed(emitter, stop)
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


async def run_push(plan: Plan, emitter: Emitter, catalog: Catalog, stop: Stop,
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
            # A partition added while the query runs is read from offset 0, as if the
            # consumer noticed it at once (Kafka notices at its next metadata refresh).
            positions = positions + [0] * (len(ends) - len(positions))
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
        await _closed(emitter, stop)


async def _closed(emitter: Emitter, stop: Stop) -> None:
    """Ended by /close-query, the client or the server: the publisher completes, so the body
    ends as a completed query's (``/query`` adds "Query Completed"); ``drop`` leaves the body
    unterminated and the connection is closed."""
    if emitter.done:
        return
    if stop.how == "drop":
        await emitter.out.abort()
        return
    await emitter.out.write(emitter.writer.end("completed"))
    await emitter.out.finish()


async def _wait(stop: asyncio.Event) -> None:
    try:
        await asyncio.wait_for(stop.wait(), PUSH_POLL_SECONDS)
    except TimeoutError:
        pass
