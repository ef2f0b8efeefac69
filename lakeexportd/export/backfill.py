"""Re-export one ROWTIME window of a stream into the lake, exactly once (``lakeexportd backfill``).

For a window ``(from, to]`` at or below the watermark, under the feed's lock:

1. every listed file whose ROWTIME range meets the window is *replaced*: its rows outside the
   window are read back, its rows inside are dropped;
2. the window's rows come again from ksqlDB (``ROWTIME > from AND ROWTIME <= to``);
3. both go through one ``AppendSink`` into new files, and one commit of ``_metadata.json``
   swaps the replaced files for the new ones (the watermark does not move); the replaced files
   are deleted after it, as orphans are.

Each row of the window comes from ksqlDB only and each row outside it from the lake only, so
the lake holds every row once, whatever it held in the window before (files lost, damaged or
rows late). A crash before the commit leaves unlisted new files (the next run removes them;
on an object store, once older than ``orphan_grace``); after it, unlisted old files (removed
the same way). A listed file that is missing can only be
dropped when the window covers all its rows (its run's exported window): otherwise its rows
outside the window would be lost, and the backfill refuses, naming the window to use.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakeexportd.config.model import Feed
from lakeexportd.errors import FeedError, LakeStateError
from lakeexportd.ksqldb import sql
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.lake import cleanup, layout
from lakeexportd.lake import metadata_update as update
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import (
    ExportRecord,
    FileEntry,
    Partition,
    StreamMetadata,
    Window,
    WrittenFile,
    iso_utc,
)
from lakeexportd.lake.sinks import AppendSink
from lakeexportd.lake.storage import Storage


@dataclass(frozen=True)
class Plan:
    """What a backfill replaces; ``missing`` files are dropped (their rows come again)."""

    window: Window
    replaced: tuple[tuple[str, FileEntry], ...]
    missing: tuple[tuple[str, FileEntry], ...]

    def describe(self, feed: str) -> list[str]:
        lines = [f"feed {feed}: re-export ROWTIME in ({self.window.from_ms}, "
                 f"{self.window.to_ms}] from ksqlDB; {len(self.replaced)} listed file(s) "
                 "rewritten without that window's rows"]
        lines += [f"  replace {p}/{f.name} ({f.records} rows)" for p, f in self.replaced]
        lines += [f"  drop missing {p}/{f.name} (its {f.records} rows are in the window)"
                  for p, f in self.missing]
        return lines


@dataclass(frozen=True)
class Result:
    plan: Plan
    rows: int  # rows in the new files (window rows from ksqlDB plus rows kept)
    window_rows: int
    files: int


def _rowtime_range(storage: Storage, path: Path) -> tuple[int, int] | None:
    with storage.open_read(path) as source:
        meta = pq.read_metadata(source)
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    index = names.index("ROWTIME")
    lows, highs = [], []
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(index).statistics
        if stats is None or not stats.has_min_max:
            return None  # unknown: treated as overlapping
        lows.append(stats.min)
        highs.append(stats.max)
    return (min(lows), max(highs)) if lows else (0, -1)


def _run_window(doc: StreamMetadata, name: str) -> Window | None:
    """The exported window of the run that wrote ``name`` (its start is in the name)."""
    start = layout.run_start_of(name)
    if start is None:
        return None
    started = iso_utc(start)
    return next((r.window for r in doc.exports if r.window is not None and r.started == started),
                None)


def plan(feed_dir: Path, doc: StreamMetadata, window: Window, *, storage: Storage) -> Plan:
    """The files a backfill of ``window`` replaces or drops; refuses what it cannot do once."""
    assert window.from_ms is not None
    if doc.watermark_ms is None or window.to_ms > doc.watermark_ms:
        raise FeedError(
            f"feed {doc.feed!r}: the window ends at {window.to_ms}, after the watermark "
            f"{doc.watermark_ms}; rows after the watermark are exported by the next run"
        )
    if window.to_ms <= window.from_ms:
        raise FeedError(f"feed {doc.feed!r}: the window ({window.from_ms}, {window.to_ms}] "
                        "is empty; --to must be after --from")
    replaced, missing = [], []
    for partition in doc.partitions:
        for entry in partition.files:
            path = feed_dir / partition.path / entry.name
            if not storage.exists(path):
                run = _run_window(doc, entry.name)
                # A first run's window starts at the beginning (None): only a window from
                # before any ROWTIME (< 0; Kafka timestamps are >= 0) covers it.
                start = -1 if run is None or run.from_ms is None else run.from_ms
                inside = run is not None and window.from_ms <= start and \
                    run.to_ms <= window.to_ms
                if not inside:
                    hint = (f"--from {start} --to {run.to_ms} (or wider)" if run is not None
                            else "no run in the kept history wrote it: restore it from a backup")
                    raise FeedError(
                        f"feed {doc.feed!r}: {partition.path}/{entry.name} is missing and its "
                        f"rows may lie outside the window; backfill its whole run: {hint}"
                    )
                missing.append((partition.path, entry))
                continue
            span = _rowtime_range(storage, path)
            if span is None or (span[0] <= window.to_ms and span[1] > window.from_ms):
                replaced.append((partition.path, entry))
    return Plan(window, tuple(replaced), tuple(missing))


def _kept_rows(
    storage: Storage, feed_dir: Path, plan: Plan, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """Rows of the replaced files outside the window, in the query's schema."""
    assert plan.window.from_ms is not None
    for partition, entry in plan.replaced:
        path = feed_dir / partition / entry.name
        try:
            with storage.open_read(path) as source:
                table = pq.read_table(source)
        except (OSError, pa.ArrowException) as exc:
            raise LakeStateError(
                f"{path} cannot be read back ({exc}); its rows outside the window would be "
                "lost: restore it, or backfill a window covering its whole run"
            ) from exc
        rowtime = table.column("ROWTIME")
        outside = pc.or_(pc.less_equal(rowtime, plan.window.from_ms),
                         pc.greater(rowtime, plan.window.to_ms))
        kept = table.filter(outside)
        columns = []
        for field in schema:
            if field.name in kept.column_names:
                columns.append(kept.column(field.name).cast(field.type))
            else:  # a column added to the source after this file was written
                columns.append(pa.nulls(kept.num_rows, field.type))
        yield from pa.Table.from_arrays(columns, schema=schema).to_batches()


def run(client: KsqlDBClient, store: MetadataStore, feed: Feed, feed_dir: Path,
        doc: StreamMetadata, the_plan: Plan, *, now: dt.datetime, run_id: str,
        follow: Callable[[], bool] | None = None) -> Result:
    """Write and commit the backfill (the caller holds the feed's lock). ``follow`` brings
    the feed's catalog level after the commit; the replaced files go only once it is."""
    window = the_plan.window
    query = sql.stream_window(feed.source, window.from_ms, window.to_ms)
    written: list[WrittenFile] = []
    window_rows = 0
    with client.query(query, batch_size=feed.batch_size) as result:
        columns = update.columns_of(result.schema, feed=feed.name)
        with AppendSink(feed_dir, result.schema, run_start=now,
                        event_time=feed.event_time or "ROWTIME", timezone=feed.timezone,
                        security=feed.security, max_open_partitions=feed.max_open_partitions,
                        max_rows_per_file=feed.max_rows_per_file,
                        storage=store.storage) as sink:
            for batch in result.batches():
                window_rows += batch.num_rows
                sink.write(batch)
            for batch in _kept_rows(store.storage, feed_dir, the_plan, result.schema):
                sink.write(batch)
            written = sink.finish()
    gone = {(p, f.name) for p, f in (*the_plan.replaced, *the_plan.missing)}
    partitions = tuple(
        Partition(p.path, tuple(f for f in p.files if (p.path, f.name) not in gone))
        for p in doc.partitions
    )
    step = dataclasses.replace(doc, partitions=tuple(p for p in partitions if p.files))
    step = update.with_schema(step, columns, now)  # type: ignore[assignment]
    assert isinstance(step, StreamMetadata)
    record = ExportRecord(
        run_id=run_id, started=iso_utc(now), finished=iso_utc(now),
        records=window_rows, status="success", window=window, files=len(written),
        size_bytes=sum(w.size_bytes for w in written),
    )
    step = update.with_stream_files(step, written, watermark_ms=doc.watermark_ms or 0,
                                    added=record.finished)
    new = update.with_export(step, record)
    store.commit(feed_dir, new, file_mode=layout.modes(feed.security)[1])
    # A catalog that still lists the replaced files keeps them: a later run removes them.
    if follow is None or follow():
        if store.storage.leases:
            # An object store: only the files this commit dropped; other unlisted objects may
            # be a paused writer's, and wait for orphan_grace (the next run's sweep, or repair).
            cleanup.remove_own(feed_dir, new,
                               [feed_dir / p / f.name for p, f in the_plan.replaced],
                               storage=store.storage)
        else:
            cleanup.remove_orphans(feed_dir, new, kind="stream",  # the replaced files
                                   storage=store.storage)
    return Result(the_plan, sum(w.records for w in written), window_rows, len(written))
