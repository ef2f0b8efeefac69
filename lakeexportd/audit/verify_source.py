"""The online half of ``lakeexportd verify --source``: recount what ksqlDB holds.

Streams: every successful run records its window ``(from_ms, to_ms]`` in ``exports``. For the
recent windows, the rows ksqlDB has with ``ROWTIME`` in the window are counted and compared with
the rows the lake holds in that ``ROWTIME`` range. A row that reached Kafka after its window was
exported (later than ROWTIME + settle_delay, DESIGN.md section 4) is *late*: it shows as
ksqlDB > lake in its window and is reported per window. ksqlDB < lake means the topic lost rows
(Kafka retention) or the lake holds duplicates.

One query covers all checked windows (``SELECT ROWTIME FROM s WHERE ROWTIME > lo AND ROWTIME
<= hi``) and rows are counted per window as they arrive: a stream pull query scans the topic
from its start, so one scan instead of one per window, and memory stays one batch.

Tables: the current version's row count against a table scan's (``SELECT * FROM t``). A table
changes between runs, so a difference may be news rather than loss; the message says both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakeexportd.audit.report import iso_ms
from lakeexportd.audit.verify import Mismatch
from lakeexportd.ksqldb import sql
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.lake import layout
from lakeexportd.lake.metadata_model import StreamMetadata, TableMetadata, Window, listed_files
from lakeexportd.lake.storage import LOCAL, Storage

DEFAULT_WINDOWS = 100  # every window `exports` keeps (KEEP_EXPORTS)


@dataclass(frozen=True)
class WindowCount:
    """Rows with ROWTIME in ``(from_ms, to_ms]`` in ksqlDB and in the lake."""

    from_ms: int | None
    to_ms: int
    source: int
    lake: int

    @property
    def late(self) -> int:
        return max(self.source - self.lake, 0)

    def label(self) -> str:
        start = "start" if self.from_ms is None else iso_ms(self.from_ms)
        rowtime = f"ROWTIME <= {self.to_ms}" if self.from_ms is None else \
            f"{self.from_ms} < ROWTIME <= {self.to_ms}"
        return f"window ({start}, {iso_ms(self.to_ms)}] ({rowtime})"


@dataclass(frozen=True)
class SourceCheck:
    feed: str
    windows: tuple[WindowCount, ...] = ()
    mismatches: tuple[Mismatch, ...] = ()
    skipped: str | None = None  # why nothing was compared


def recent_windows(doc: StreamMetadata, limit: int = DEFAULT_WINDOWS) -> list[Window]:
    """The windows of the last ``limit`` successful runs that could hold rows, oldest first."""
    windows = [e.window for e in doc.exports if e.status == "success" and e.window is not None
               and (e.window.from_ms is None or e.window.to_ms > e.window.from_ms)]
    return windows[-limit:] if limit > 0 else []


def count_in_windows(rowtimes: Iterable[pa.Array | pa.ChunkedArray],
                     windows: Sequence[Window]) -> list[int]:
    counts = [0] * len(windows)
    for array in rowtimes:
        for i, w in enumerate(windows):
            inside = pc.less_equal(array, w.to_ms)
            if w.from_ms is not None:
                inside = pc.and_(inside, pc.greater(array, w.from_ms))
            counts[i] += pc.sum(inside.cast(pa.int64())).as_py() or 0
    return counts


def _span(windows: Sequence[Window]) -> tuple[int | None, int]:
    starts = [w.from_ms for w in windows]
    return (None if None in starts else min(s for s in starts if s is not None),
            max(w.to_ms for w in windows))


def _lake_rowtimes(storage: Storage, feed_dir: Path, doc: StreamMetadata,
                   windows: Sequence[Window]) -> Iterable[pa.ChunkedArray]:
    low, high = _span(windows)
    where = [("ROWTIME", "<=", high)] + ([("ROWTIME", ">", low)] if low is not None else [])
    for directory, entry in listed_files(doc):
        # Row-group statistics let pyarrow skip files outside the checked range.
        with storage.open_read(feed_dir / directory / entry.name) as source:
            table = pq.read_table(source, columns=["ROWTIME"], filters=where)
        yield table.column(0)


def _source_rowtimes(client: KsqlDBClient, source: str,
                     windows: Sequence[Window]) -> Iterable[pa.Array]:
    low, high = _span(windows)
    with client.query(sql.window_rowtimes(source, low, high)) as result:
        for batch in result.batches():
            yield batch.column(0)


def check_stream(client: KsqlDBClient, root: Path, doc: StreamMetadata, *,
                 limit: int = DEFAULT_WINDOWS, retention_days: int | None = None,
                 timezone: str = "UTC", storage: Storage = LOCAL) -> SourceCheck:
    windows = recent_windows(doc, limit)
    if retention_days is not None and doc.partitions:
        # Retention removed older days from the lake on purpose: compare only newer windows.
        first = min(layout.partition_day(p.path) for p in doc.partitions)
        kept = dt.datetime.combine(first, dt.time(), layout.zone(timezone))
        kept_ms = int(kept.timestamp() * 1000)
        windows = [w for w in windows if w.from_ms is not None and w.from_ms >= kept_ms]
    if not windows:
        return SourceCheck(doc.feed, skipped="no exported window to recount")
    feed_dir = layout.feed_dir(root, "stream", doc.feed)
    lake = count_in_windows(_lake_rowtimes(storage, feed_dir, doc, windows), windows)
    source = count_in_windows(_source_rowtimes(client, doc.source, windows), windows)
    counts = tuple(WindowCount(w.from_ms, w.to_ms, s, n)
                   for w, s, n in zip(windows, source, lake))
    problems = []
    for c in counts:
        if c.source > c.lake:
            problems.append(Mismatch(doc.feed, c.label(), (
                f"{c.late} late rows: ksqlDB has {c.source}, the lake {c.lake} (they reached "
                "Kafka after ROWTIME + settle_delay, after this window was exported; raise "
                "settle_delay if this recurs)")))
        elif c.source < c.lake:
            problems.append(Mismatch(doc.feed, c.label(), (
                f"the lake has {c.lake - c.source} more rows than ksqlDB ({c.lake} vs "
                f"{c.source}): the topic dropped them (Kafka retention) or rows are duplicated")))
    return SourceCheck(doc.feed, counts, tuple(problems))


def check_table(client: KsqlDBClient, doc: TableMetadata, *, batch_size: int = 10_000
                ) -> SourceCheck:
    current = doc.current
    if current is None:
        return SourceCheck(doc.feed, skipped="no current version yet")
    scanned = 0
    with client.query(sql.table_scan(doc.source), batch_size=batch_size) as result:
        for batch in result.batches():
            scanned += batch.num_rows
    counts = (WindowCount(None, 0, scanned, current.records),)
    if scanned == current.records:
        return SourceCheck(doc.feed, counts)
    problem = (f"current version v{current.version} (created {current.created}) has "
               f"{current.records} rows, a table scan now returns {scanned}: the table changed "
               "since that snapshot, or rows are missing; the next export writes a new version")
    return SourceCheck(doc.feed, counts, (Mismatch(doc.feed, current.path, problem),))
