"""A realtime feed (DESIGN 14): one long-lived push query, files rotated and committed with
their exact Kafka offsets.

``RealtimeFeed.run`` is called with the feed's lock (a lease on object stores) held, and
returns when ``stop`` is set, or raises when the feed cannot go on (its lease lost, its
schema changed). Its loop:

1. load the committed point (``_metadata.json``'s ``offsets``, or the Delta log's
   transaction identifiers) and start ``SELECT ROWPARTITION, ROWOFFSET, ROWTIME, * ...
   WHERE <after that point> EMIT CHANGES`` with ``auto.offset.reset=earliest``;
2. drop rows at or below the point on this side too (``fresh_rows``), write the rest,
   without ROWPARTITION and ROWOFFSET, to the day partitions of their event time;
3. rotate when ``rotate`` says so (rows, bytes, age of the oldest row, idle): close the
   files of every open day and commit them with the new offsets in one atomic commit
   (``Rotation``: the same commit path as a batch run, failpoints included);
4. the body ended (``/close-query``, a ksqlDB restart) or broke: commit the whole rows
   received, then start again from the new point after a backoff;
5. ``stop`` (SIGTERM, a reload that changes the feed): ``/close-query``, hand over what
   ksqlDB still sends, commit it, return.

Any failure of a rotation drops what it wrote (never listed) and starts again from the last
commit: rows are read again, never lost or doubled. Each rotation is a run in the feed's
``exports`` history (no ROWTIME window: realtime rows are not cut by time).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import structlog

from lakeexportd.catalog.policy import follow_catalog
from lakeexportd.config.model import Feed
from lakeexportd.errors import (
    CommitOutcomeUnknown,
    ExportAborted,
    KsqlDBStreamError,
    LakeExportError,
    LakeStateError,
    PushQueryEnded,
    TransientError,
)
from lakeexportd.export.delta_run import DELTA_BUFFER_BYTES, DeltaRun, new_run
from lakeexportd.export.run import Run, epoch_ms
from lakeexportd.failpoints import failpoint
from lakeexportd.ksqldb import sql
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.push import PushQuery
from lakeexportd.lake import delta
from lakeexportd.lake import metadata_update as update
from lakeexportd.lake.compaction import compact_feed
from lakeexportd.lake.locking import HeldLock
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import FeedMetadata, Offsets, StreamMetadata
from lakeexportd.lake.sinks import BUFFER_BYTES

if TYPE_CHECKING:
    from lakeexportd.catalog.iceberg import LakeCatalog

log = structlog.get_logger(__name__)

PSEUDO = ("ROWPARTITION", "ROWOFFSET")
EARLIEST = {"auto.offset.reset": "earliest"}
POLL_S = 0.25  # the longest wait for rows before the rotation rules are looked at again
DRAIN_S = 10.0  # after /close-query: how long the rows ksqlDB still sends are waited for
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 30.0
COMPACT_FIRST_S, COMPACT_EVERY_S = 120.0, 86_400.0  # as the daemon's job for batch feeds
FAILED_BACKOFF_S = 60.0  # after a failure that is not passing trouble (a schema change...)

State = Literal["starting", "running", "reconnecting", "stopped", "failed"]
Monotonic = Callable[[], float]
Clock = Callable[[], dt.datetime]


# -- the committed point ------------------------------------------------------------------------

def starting_point(doc: StreamMetadata, feed: Feed, now: dt.datetime) -> Offsets:
    """Where the push query starts: the committed offsets; else (a feed switched from batch
    mode) after the watermark; else (a new feed) from the first row, or after ``now`` for
    ``start: now``."""
    if doc.offsets is not None:
        return doc.offsets
    if doc.watermark_ms is not None:
        return Offsets({}, doc.watermark_ms)
    return Offsets({}, epoch_ms(now) if feed.start == "now" else None)


def fresh_rows(batch: pa.RecordBatch, seen: dict[int, int],
               after_ms: int | None) -> tuple[pa.RecordBatch, dict[int, int]]:
    """The rows of ``batch`` after the point: per partition a ROWOFFSET above ``seen``
    (the offsets committed or already written), and a ROWTIME after ``after_ms``; with the
    pseudo columns dropped. Also the highest offset received per partition (rows of one
    partition come in offset order, so it is where that partition now stands)."""
    parts = batch.column(0).to_numpy(zero_copy_only=False)
    offsets = batch.column(1).to_numpy(zero_copy_only=False)
    if batch.column(0).null_count or batch.column(1).null_count:
        raise KsqlDBStreamError("a push query row has no ROWPARTITION or ROWOFFSET")
    keep = np.ones(batch.num_rows, dtype=bool)
    reached: dict[int, int] = {}
    for p in np.unique(parts).tolist():
        here = parts == p
        newer = here & (offsets > seen.get(p, -1))
        keep &= ~here | newer
        if newer.any():
            reached[p] = int(offsets[newer].max())
    if after_ms is not None:
        keep &= batch.column(2).to_numpy(zero_copy_only=False) > after_ms
    rows = batch if keep.all() else batch.filter(pa.array(keep))
    return rows.drop_columns(list(PSEUDO)), reached


# -- one rotation -------------------------------------------------------------------------------

@dataclass
class Pending:
    """What was written since the last commit."""

    rows: int = 0
    bytes: int = 0
    first_at: float | None = None  # monotonic time its first row arrived
    offsets: dict[int, int] = field(default_factory=dict)
    max_rowtime: int | None = None


class Rotation:
    """One rotation's files and commit, as a run of the feed (``Run`` or ``DeltaRun``)."""

    def __init__(self, run: Run, doc: StreamMetadata, schema: pa.Schema) -> None:
        self.run = run
        self.doc = doc
        self.delta = isinstance(run, DeltaRun)
        run.columns = run._checked_columns(doc, schema)
        self.logged: int | None = None
        self.files_written = 0
        self.table: delta.Table | None = None
        files = schema
        if isinstance(run, DeltaRun):
            table = run.delta.load()
            self.logged = run.delta.transaction_version(table) if table is not None else None
            files = delta.file_schema(schema, run.feed.name, kind="stream")
            self.table = run._table_for(table, files, kind="stream")
        self.files = files
        self.sink = run._append_sink(
            files, buffer_bytes=DELTA_BUFFER_BYTES if self.delta else BUFFER_BYTES)
        self._abandoned = False

    def write(self, batch: pa.RecordBatch) -> None:
        self.sink.write(delta.to_file_schema(batch, self.files) if self.delta else batch)

    def commit(self, pending: Pending, point: Offsets) -> FeedMetadata:
        """Close the files and commit them with ``point`` in one commit; the new document."""
        run, doc = self.run, self.doc
        try:
            failpoint("realtime.before_rotate")
            written = self.sink.finish()
            failpoint("realtime.before_commit")
            self.files_written = len(written)
            record = run._record("success", written)
            watermark = max(m for m in (doc.watermark_ms, pending.max_rowtime, point.after_ms)
                            if m is not None)
            if isinstance(run, DeltaRun):
                assert self.table is not None
                run._commit_delta_stream(doc, self.table, written, logged=self.logged,
                                         watermark_ms=watermark, window=None, offsets=point)
            else:
                run._commit_stream(doc, record, written, watermark_ms=watermark, offsets=point)
            failpoint("realtime.after_commit")
        except BaseException as exc:
            self.abandon(exc)
            raise
        assert run.listed is not None
        return run.listed

    def abandon(self, exc: BaseException | None = None) -> None:
        """Drop what this rotation wrote and was never committed (unless its commit may
        have landed: then the next start judges the files by what is committed). Once:
        the query's own cleanup calls it again after a failed commit did."""
        if self._abandoned:
            return
        self._abandoned = True
        self.sink.abort()
        if not isinstance(exc, CommitOutcomeUnknown):
            if isinstance(self.run, DeltaRun):
                self.run._remove_own_unless_committed()
            else:
                self.run._remove_unlisted()
        if isinstance(exc, Exception):
            self.run._record_failure(self.doc, exc)


# -- the feed -----------------------------------------------------------------------------------

class RealtimeFeed:
    """One realtime feed's push query and rotations (see the module doc)."""

    def __init__(
        self,
        *,
        client: KsqlDBClient,
        store: MetadataStore,
        root: Path,
        feed: Feed,
        feed_dir: Path,
        stop: threading.Event,
        clock: Clock,
        orphan_grace: float = 3600.0,
        catalog: LakeCatalog | None = None,
        monotonic: Monotonic = time.monotonic,
        on_commit: Callable[[RealtimeFeed, FeedMetadata, int], None] | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.root = root
        self.feed = feed
        self.feed_dir = feed_dir
        self.stop = stop
        self.clock = clock
        self.orphan_grace = orphan_grace
        self.catalog = catalog
        self.monotonic = monotonic
        self.on_commit = on_commit
        self.state: State = "starting"
        self.query_id: str | None = None
        self.commits = 0
        self.rows_committed = 0
        self.pending_rows = 0  # rows written since the last commit (/status shows them)
        self.reconnects = 0
        self.compactions = 0
        self.catalog_behind: str | None = None  # why the catalog is behind the last commit
        self.newest_rowtime_ms: int | None = None  # the newest ROWTIME committed (the lake's)
        self.last_error: str | None = None
        self.holding = False  # run() was called: the feed's lock is held
        self._fence: Callable[[], None] = lambda: None
        # The feed's lock while run_realtime holds it: the daily compaction runs under it
        # here, between two rotations (the daemon's compaction job would find it taken).
        self.held: HeldLock | None = None
        self._next_compaction = monotonic() + COMPACT_FIRST_S
        self._delivered = False  # the current query handed over rows

    def run(self, fence: Callable[[], None] = lambda: None) -> None:
        """Export until ``stop`` is set. Trouble with ksqlDB or the store reconnects with a
        backoff (each time from the committed point); a lost lease raises (``fence``: the
        feed is another daemon's now)."""
        self._fence = fence
        self.holding = True
        backoff = BACKOFF_FIRST_S
        while not self.stop.is_set():
            started = self.monotonic()
            self._delivered = False
            try:
                self._one_query()
            except ExportAborted:
                break  # stopped while waiting for the answer's header
            except TransientError as exc:
                if self._up_for_a_while(started):  # a new trouble, not the last one again
                    backoff = BACKOFF_FIRST_S
                self.state, self.last_error = "reconnecting", str(exc)
                log.warning("realtime.reconnecting", feed=self.feed.name, error=str(exc),
                            retry_in_s=backoff, query_id=self.query_id,
                            hint="every whole row before it was committed; the query starts "
                            "again after the committed offsets")
            except (LakeExportError, OSError) as exc:  # OSError: a full disk, say
                self._fence()  # a lost lease ends this feed here: the standby takes it
                self.state, self.last_error = "failed", str(exc)
                backoff = max(backoff, FAILED_BACKOFF_S)
                log.error("realtime.failed", feed=self.feed.name, error=str(exc),
                          error_type=type(exc).__name__, retry_in_s=backoff,
                          hint="nothing uncommitted was published; the feed starts again "
                          "from its committed offsets once the cause is fixed")
            else:
                if self.stop.is_set():
                    break
                if self._up_for_a_while(started):
                    backoff = BACKOFF_FIRST_S
                self.state = "reconnecting"
                log.warning("realtime.query_ended", feed=self.feed.name, retry_in_s=backoff,
                            query_id=self.query_id, hint="ksqlDB ended the body (a restart or "
                            "/close-query); every row it sent was committed")
            self.reconnects += 1
            if self.stop.wait(backoff):
                break
            backoff = min(backoff * 2, max(BACKOFF_MAX_S, backoff))
        self.state = "stopped"

    def _up_for_a_while(self, started: float) -> bool:
        """The query that just ended delivered rows or ran a minute: the backoff starts
        over (only queries that fail again and again wait longer and longer)."""
        return self._delivered or self.monotonic() - started > 60

    def _one_query(self) -> bool:
        """One push query from the committed point, until it ends or ``stop``: True if it
        delivered rows. Raises what ended it badly, after committing the rows before."""
        run = self._new_run()
        doc = run.prepare()  # leftovers removed (local lakes), the format checked
        self._sweep(run)
        if self.feed.format == "delta":
            doc = self._delta_point(doc)
        if not isinstance(doc, StreamMetadata):
            raise LakeStateError(f"feed {self.feed.name!r}: {self.feed_dir} holds a table's "
                                 "_metadata.json; a realtime feed is a stream")
        point = starting_point(doc, self.feed, self.clock())
        if doc.watermark_ms is not None:  # the lake's newest ROWTIME, whoever committed it
            self.newest_rowtime_ms = max(self.newest_rowtime_ms or 0, doc.watermark_ms)
        if doc.offsets is None and doc.watermark_ms is None and point.after_ms is not None:
            # `start: now`: the moment is committed at once, or a query that ends before its
            # first commit would start the next one later, and lose the rows in between.
            doc = self._commit_start(doc, point)
            log.info("realtime.starting_now", feed=self.feed.name, after_ms=point.after_ms)
        seen = dict(point.partitions)
        query = sql.push_after(self.feed.source, point.partitions, point.after_ms)
        with self.client.push(query, properties=EARLIEST, cancel=self.stop) as push:
            self.query_id = push.query_id
            self.state = "running"
            log.info("realtime.query_started", feed=self.feed.name, query_id=push.query_id,
                     partitions=dict(sorted(point.partitions.items())), after_ms=point.after_ms)
            schema = push.schema
            if list(schema.names[:3]) != [*PSEUDO, "ROWTIME"]:
                raise KsqlDBStreamError(f"feed {self.feed.name!r}: the push query's columns "
                                        f"start {schema.names[:3]}, not ROWPARTITION, "
                                        "ROWOFFSET, ROWTIME")
            files = pa.schema([f for f in schema if f.name not in PSEUDO])
            rotation: Rotation | None = None
            pending = Pending()
            last_row = self.monotonic()
            drain_until: float | None = None  # set once /close-query was sent
            try:
                while True:
                    if drain_until is None and self.stop.is_set():
                        drain_until = self.monotonic() + DRAIN_S
                        self._close_query(push)  # ksqlDB ends the body after what it sent
                    try:
                        wait = POLL_S if drain_until is None else \
                            min(POLL_S, max(0.0, drain_until - self.monotonic()))
                        batch = push.next_batch(timeout=wait)
                    except (PushQueryEnded, KsqlDBStreamError) as end:
                        doc, rotation, pending = self._rotate(doc, rotation, pending, point)
                        if drain_until is not None or isinstance(end, PushQueryEnded):
                            return self._delivered
                        raise
                    now = self.monotonic()
                    if batch is not None and batch.num_rows:
                        rows, reached = fresh_rows(batch, seen, point.after_ms)
                        seen.update(reached)
                        pending.offsets.update(reached)
                        last_row = now
                        if rows.num_rows:
                            self._delivered = True
                            if rotation is None:
                                rotation = Rotation(self._new_run(), doc, files)
                            rotation.write(rows)
                            failpoint("realtime.after_rows")
                            pending.rows += rows.num_rows
                            self.pending_rows = pending.rows
                            pending.bytes += rows.nbytes
                            if pending.first_at is None:
                                pending.first_at = now
                            newest = rows.column("ROWTIME").to_numpy(zero_copy_only=False).max()
                            pending.max_rowtime = max(int(newest), pending.max_rowtime or 0)
                    elif drain_until is not None and now >= drain_until:
                        log.warning("realtime.drain_timeout", feed=self.feed.name,
                                    query_id=push.query_id, waited_s=DRAIN_S,
                                    hint="ksqlDB did not end the body after /close-query; "
                                    "what came was committed, the rest is read next time")
                        doc, rotation, pending = self._rotate(doc, rotation, pending, point)
                        return self._delivered
                    if self._due(pending, last_row, now):
                        doc, rotation, pending = self._rotate(doc, rotation, pending, point)
                        point = dataclasses.replace(point, partitions=dict(seen))
            except BaseException:
                self.pending_rows = 0
                if rotation is not None:
                    rotation.abandon()
                raise

    def _commit_start(self, doc: StreamMetadata, point: Offsets) -> StreamMetadata:
        """Commit a point without rows: the offsets and the watermark ``point.after_ms``."""
        assert point.after_ms is not None
        run = self._new_run()
        record = run._record("success", [])
        if isinstance(run, DeltaRun):  # a Delta feed without a table yet: the summary holds it
            new = update.after_stream_run(doc, record=record, written=[], columns=doc.schema,
                                          watermark_ms=point.after_ms, now=run.now)
            run._commit(dataclasses.replace(new, offsets=point))
        else:
            run._commit_stream(doc, record, [], watermark_ms=point.after_ms, offsets=point)
        assert isinstance(run.listed, StreamMetadata)
        return run.listed

    def _close_query(self, push: PushQuery) -> None:
        try:
            push.close_query()
        except LakeExportError as exc:  # leaving the block closes the connection: it ends too
            log.warning("realtime.close_query_failed", feed=self.feed.name,
                        query_id=push.query_id, error=str(exc))

    def _due(self, pending: Pending, last_row: float, now: float) -> bool:
        """Whether the rows written since the last commit are committed now."""
        if pending.rows == 0:
            # Only rows at or before after_ms came: nothing to commit, but the point in
            # memory moves past them (_rotate with no rotation commits nothing).
            return bool(pending.offsets)
        rotate = self.feed.rotate
        assert pending.first_at is not None
        return (pending.rows >= rotate.rows or pending.bytes >= rotate.bytes
                or now - pending.first_at >= rotate.age or now - last_row >= rotate.idle)

    def _rotate(self, doc: StreamMetadata, rotation: Rotation | None, pending: Pending,
                point: Offsets) -> tuple[StreamMetadata, None, Pending]:
        """Commit what ``pending`` holds (if anything) with the point it reached."""
        if rotation is None:
            return doc, None, Pending()  # nothing written since the last commit
        reached = Offsets({**point.partitions, **pending.offsets}, point.after_ms)
        new = rotation.commit(pending, reached)
        assert isinstance(new, StreamMetadata)
        self.pending_rows = 0
        self.commits += 1
        self.rows_committed += pending.rows
        self.catalog_behind = rotation.run.catalog_behind
        self.newest_rowtime_ms = max(pending.max_rowtime or 0, self.newest_rowtime_ms or 0)
        log.info("realtime.committed", feed=self.feed.name, run_id=rotation.run.run_id,
                 rows=pending.rows, files=rotation.files_written,
                 offsets=dict(sorted(reached.partitions.items())), watermark_ms=new.watermark_ms,
                 catalog_behind=rotation.run.catalog_behind)
        if self.on_commit is not None:
            self.on_commit(self, new, pending.rows)
        if self.held is not None and self.monotonic() >= self._next_compaction:
            self._next_compaction = self.monotonic() + COMPACT_EVERY_S
            self._compact()
            self._sweep(rotation.run)
            new = self._reload(new)
        return new, None, Pending()

    def _sweep(self, run: Run) -> None:
        """Object stores, at each query's start and daily: unlisted Parquet objects past
        the grace go, as after a batch run's commit (not while the catalog may list them;
        a Delta feed's leftovers are its vacuum's)."""
        if self.store.storage.leases and self.feed.format != "delta" \
                and run.catalog_behind is None:
            run._sweep_after_commit()

    def _compact(self) -> None:
        """The feed's closed days compacted (``compaction:``), as the daemon's daily job
        does for batch feeds; rows wait in the query meanwhile (back-pressure)."""
        if self.feed.compaction is None:
            return
        started = self.monotonic()
        try:
            result = compact_feed(self.store.storage, self.root, self.feed, now=self.clock(),
                                  lock_wait=0.0, orphan_grace=self.orphan_grace,
                                  cancel=self.stop, follow=follow_catalog(self.catalog,
                                                                          self.feed),
                                  held=self.held)
        except LakeExportError as exc:
            self._fence()
            log.warning("compact.failed", feed=self.feed.name, error=str(exc),
                        hint="the realtime feed goes on; compaction is tried again tomorrow")
            return
        self.compactions += 1
        log.info("compact.finished", feed=self.feed.name, files_in=result.files_in,
                 files_out=result.files_out, realtime=True,
                 duration_s=round(self.monotonic() - started, 3))

    def _reload(self, doc: StreamMetadata) -> StreamMetadata:
        """The committed document after work that committed on its own (compaction)."""
        loaded = self.store.load(self.feed_dir)
        if self.feed.format == "delta":
            loaded = self._delta_point(loaded or doc)
        return loaded if isinstance(loaded, StreamMetadata) else doc

    def _new_run(self) -> Run:
        run = new_run(client=self.client, root=self.root, store=self.store, feed=self.feed,
                      feed_dir=self.feed_dir, now=self.clock(), cancel=self.stop,
                      progress=None, run_id=None, orphan_grace=self.orphan_grace,
                      catalog=self.catalog)
        run._fence = self._fence
        return run

    def _delta_point(self, doc: FeedMetadata) -> FeedMetadata:
        """A Delta feed's point comes from its log (the summary may lag behind it)."""
        feed = delta.DeltaFeed(self.store.storage, self.feed_dir, self.feed.name)
        table = feed.load()
        if table is None or not isinstance(doc, StreamMetadata) \
                or feed.transaction_version(table) is None:
            return doc  # no commit in the log yet: the summary's (a `start: now` point)
        return dataclasses.replace(doc, watermark_ms=feed.transaction_version(table),
                                   offsets=feed.offsets(table))
