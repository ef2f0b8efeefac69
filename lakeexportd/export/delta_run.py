"""One export run of a ``format: delta`` feed: the Delta log is the commit point.

The steps of a stream run: read the feed's transaction version from the log (the watermark),
query the window after it, write the files with the same sinks as Parquet feeds, check the
log has not moved, commit the files with the transaction at the new watermark (no retries:
a commit that lost a race publishes nothing), then write ``_metadata.json`` as a summary of
the log. A table run is the same with one overwrite commit, then a vacuum that keeps the
newest ``retention_versions`` snapshots readable.

Killed anywhere, nothing is lost or doubled: before the log commit the files are unlisted
(the next vacuum removes them after the grace), after it the next run starts from the log's
watermark, whatever ``_metadata.json`` says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import structlog
from deltalake.exceptions import DeltaError

from lakeexportd.errors import CommitOutcomeUnknown, LakeExportError, LakeStateError
from lakeexportd.export.overlap import Overlap, overlap_start
from lakeexportd.export.run import ExportResult, Run, epoch_ms, log_waiting_after_realtime
from lakeexportd.failpoints import failpoint
from lakeexportd.ksqldb import sql
from lakeexportd.lake import delta, layout
from lakeexportd.lake import metadata_update as update
from lakeexportd.lake.delta import DeltaFeed
from lakeexportd.lake.metadata_model import (
    FeedMetadata,
    Offsets,
    StreamMetadata,
    TableMetadata,
    Window,
    WrittenFile,
)
from lakeexportd.lake.sinks import SnapshotSink

log = structlog.get_logger(__name__)

DELTA_BUFFER_BYTES = 40 * 1024 * 1024
"""The stream sink's buffer budget for Delta feeds (Parquet feeds: 64 MiB). delta-rs's native
library adds about 30 MB to the process; a smaller budget keeps a 5M-row export's peak under
350 MB (benchmarks/delta_memory.py), at the cost of smaller row groups."""


LANDED_LOOKBACK = 20
"""Commits of the log a failed run looks through for its own (only a compaction of another
process can come between a run's commit and its failure: the feed's lock excludes writers)."""


class DeltaRun(Run):
    """``Run`` for Delta feeds; the Parquet cleanup never runs here (the log lists files)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delta = DeltaFeed(self.store.storage, self.feed_dir, self.feed.name)
        self._written: list[WrittenFile] = []
        self._txn: int | None = None  # the transaction version this run commits

    def execute(self, fence: Callable[[], None] = lambda: None) -> ExportResult:
        self._fence = fence
        doc = self.prepare()
        try:
            if isinstance(doc, StreamMetadata):
                return self._delta_stream(doc)
            assert isinstance(doc, TableMetadata)
            return self._delta_table(doc)
        except BaseException as exc:
            if not isinstance(exc, CommitOutcomeUnknown):
                self._remove_own_unless_committed()
            self._record_failure(doc, exc)
            raise

    def prepare(self) -> FeedMetadata:
        """The summary document (a new one before the first commit), the format checked."""
        doc = self.store.load(self.feed_dir)
        if doc is not None and not self.delta.has_log() and _lists_files(doc):
            raise LakeStateError(
                f"feed {self.feed.name!r} holds Parquet files "
                f"({self.store.storage.show(self.feed_dir)}) but is configured `format: delta`: "
                "a feed's format cannot change in place. "
                "Export Delta under a new feed name, or set `format: parquet` back")
        if doc is None:
            doc = update.new_document(self.feed.kind, feed=self.feed.name, source=self.feed.source)
        failpoint("export.after_cleanup")
        return doc

    # -- streams ---------------------------------------------------------------------------

    def _delta_stream(self, doc: StreamMetadata) -> ExportResult:
        feed = self.feed
        table = self.delta.load()
        # The log's transaction version is the watermark. Before the log holds one (no table
        # yet, or a run killed right after creating it), the summary's: a first `start: now`
        # run commits no table (it has no schema to create one with), only its watermark.
        logged = self.delta.transaction_version(table) if table is not None else None
        lower = logged if logged is not None else doc.watermark_ms
        upper = epoch_ms(self.now) - round(feed.settle_delay * 1000)
        window = Window(lower, upper)
        written: list[WrittenFile] = []
        if lower is None and feed.start == "now":
            window = Window(upper, upper)
            new = update.after_stream_run(doc, record=self._record("success", [], window=window),
                                          written=[], columns=doc.schema, watermark_ms=upper,
                                          now=self.now)
            self._commit(new)
            return self._result([], watermark_ms=upper, window_from_ms=None)
        if lower is not None and upper <= lower:  # the clock has not passed the watermark
            if table is not None and self.delta.offsets(table) is not None:
                log_waiting_after_realtime(feed, lower, upper)  # the first run after realtime
            if table is not None:  # the summary from the log (it may have been lost)
                self._summarize(doc, [], window=Window(lower, lower))
            else:
                self._commit(update.with_export(doc, self._record("success", [], window=Window(
                    lower, lower))))
            return self._result([], watermark_ms=lower, window_from_ms=lower)
        overlap = None
        point = self.delta.offsets(table) if table is not None else None
        if point is not None and lower is not None:  # the feed ran in real time until now
            assert table is not None
            overlap = self._delta_overlap(table, lower, point.after_ms,
                                          [c.name for c in doc.schema])
            window = Window(overlap.lower, upper)
            log.info("export.after_realtime", feed=feed.name, run_id=self.run_id,
                     from_ms=overlap.lower, realtime_watermark_ms=lower,
                     hint="the first batch run after real time starts settle_delay before "
                     "its watermark; the rows of that overlap the lake holds are left out")
        query = sql.stream_window(feed.source, window.from_ms, upper)
        with self.client.query(query, batch_size=feed.batch_size, cancel=self.cancel) as result:
            self.columns = self._checked_columns(doc, result.schema)
            files = delta.file_schema(result.schema, feed.name, kind="stream")
            table = self._table_for(table, files, kind="stream")
            with self._append_sink(files, buffer_bytes=DELTA_BUFFER_BYTES) as sink:
                for batch in self._batches(result.batches()):
                    rows = delta.to_file_schema(batch, files)
                    sink.write(rows if overlap is None else overlap.new_rows(rows))
                written = sink.finish()
        self._commit_delta_stream(doc, table, written, logged=logged, watermark_ms=upper,
                                  window=window)
        return self._result(written, watermark_ms=upper, window_from_ms=lower)

    def _delta_overlap(self, table: delta.Table, watermark: int, after_ms: int | None,
                       columns: list[str]) -> Overlap:
        """As ``Run._overlap``: the log's rows of ``(watermark - settle_delay, watermark]``
        (not before the realtime start time), read through delta-rs."""
        lower = overlap_start(watermark, self.feed.settle_delay, after_ms)
        rowtime = pc.field("ROWTIME")
        try:
            held = table.to_pyarrow_dataset().to_table(
                filter=(rowtime > lower) & (rowtime <= watermark))
        except (DeltaError, OSError, pa.ArrowException) as exc:
            raise LakeStateError(f"feed {self.feed.name!r}: cannot read the rows of "
                                 f"{self.delta.shown} it exported in real time: {exc}") from exc
        return Overlap(lower, watermark, [held], columns)  # not year/month/day: the folders

    def _commit_delta_stream(
        self, doc: StreamMetadata, table: delta.Table, written: list[WrittenFile], *,
        logged: int | None, watermark_ms: int, window: Window | None,
        offsets: Offsets | None = None,
    ) -> None:
        """One log commit of ``written`` at ``watermark_ms`` (with a realtime feed's
        ``offsets``), if the log's watermark is still ``logged``; then the summary."""
        feed = self.feed
        self._written = written
        self._check_unmoved(table, logged)
        failpoint("export.before_commit")
        self._fence()
        self._txn = watermark_ms
        expired: list[dict[str, object]] = []
        too_old: list[WrittenFile] = []
        if feed.retention_days is not None:
            # Past retention: the table's old days leave in this commit, and this run's own
            # files of such days (late rows) are never added.
            cutoff = layout.retention_cutoff(self.now, feed.retention_days, feed.timezone)
            expired = delta.files_before(self.delta, table, cutoff)
            too_old = [w for w in written if layout.partition_day(w.partition) < cutoff]
            written = [w for w in written if w not in too_old]
        lower = window.from_ms if window is not None else logged
        version = self.delta.commit(
            table, written, kind="stream", schema=table.schema(), txn_version=watermark_ms,
            run_id=self.run_id, remove=expired, rowtime_stats=feed.event_time is None,
            extra={"watermark_ms": str(watermark_ms),
                   "window_from_ms": "" if lower is None else str(lower)},
            offsets=offsets)
        log.info("delta.committed", feed=feed.name, run_id=self.run_id, version=version,
                 files=len(written), rows=sum(w.records for w in written),
                 watermark_ms=watermark_ms)
        for w in too_old:  # never listed by any commit: this run's own
            self.store.storage.delete(self.feed_dir / w.partition / w.name)
        self._summarize(doc, written, window=window)

    # -- tables ----------------------------------------------------------------------------

    def _delta_table(self, doc: TableMetadata) -> ExportResult:
        feed = self.feed
        table = self.delta.load()
        previous = self.delta.transaction_version(table) if table is not None else None
        scan_started = epoch_ms(self.now)
        if previous is not None and previous >= scan_started:
            raise LakeStateError(
                f"feed {feed.name!r}: the Delta log already holds a snapshot taken at "
                f"{previous} ms, not older than this run's ({scan_started} ms); a newer "
                "snapshot is never replaced by an older one (is a clock behind?)")
        with self.client.query(
            sql.table_scan(feed.source), batch_size=feed.batch_size, cancel=self.cancel
        ) as result:
            self.columns = self._checked_columns(doc, result.schema)
            files = delta.file_schema(result.schema, feed.name, kind="table")
            table = self._table_for(table, files, kind="table")
            folder = max([table.version() + 1, *(
                n + 1 for e in self.store.storage.list_dir(self.feed_dir)
                if e.is_dir and (n := layout.version_number(e.name)) is not None)])
            with SnapshotSink(
                self.root, feed.name, files, version=folder, run_start=self.now,
                security=feed.security, max_rows_per_file=feed.max_rows_per_file,
                storage=self.store.storage, in_place=True,
            ) as sink:
                self._sinks.append(sink)
                for batch in self._batches(result.batches()):
                    sink.write(delta.to_file_schema(batch, files))
                written = sink.publish()
        self._written = written
        self._check_unmoved(table, previous)
        failpoint("export.before_commit")
        self._fence()
        self._txn = scan_started
        version = self.delta.commit(table, written, kind="table", schema=table.schema(),
                                    txn_version=scan_started, run_id=self.run_id)
        log.info("delta.committed", feed=feed.name, run_id=self.run_id, version=version,
                 files=len(written), rows=sum(w.records for w in written))
        new = self._summarize(doc, written, version=version)
        assert isinstance(new, TableMetadata)
        failpoint("export.after_commit")
        self._vacuum_table([v.version for v in new.versions])
        failpoint("export.after_prune")
        return self._result(written, version=version, versions_kept=len(new.versions),
                            scan_started_ms=scan_started)

    def _vacuum_table(self, keep: list[int]) -> None:
        """Files only older snapshots read go; the grace covers readers in flight."""
        table = self.delta.load()
        if table is None:
            return
        try:
            done = delta.vacuum(self.delta, table, retention_s=self.orphan_grace, dry_run=False,
                                keep_versions=keep)
        except LakeExportError as exc:  # committed already: the next run vacuums
            log.warning("delta.vacuum_failed", feed=self.feed.name, error=str(exc))
            return
        if done.removed or done.leftovers:
            log.info("delta.vacuumed", feed=self.feed.name, removed=len(done.removed),
                     leftovers=len(done.leftovers), kept_versions=keep)

    # -- shared steps ----------------------------------------------------------------------

    def _table_for(self, table: delta.Table | None, files: pa.Schema, *,
                   kind: str) -> delta.Table:
        """The table to commit to: created on the first run, widened by added columns."""
        if table is None:
            table = self.delta.create(delta.table_schema(files, kind=kind), kind=kind)
            failpoint("delta.after_create")
            return table
        return self.delta.add_columns(table, files)

    def _check_unmoved(self, table: delta.Table, expected: int | None) -> None:
        """The transaction version is still what this run started from (a table reloaded
        after adding columns may have caught another writer's commit)."""
        now = self.delta.transaction_version(table)
        if now != expected:
            raise delta.DeltaCommitRefused(
                f"feed {self.feed.name!r}: another writer committed to the Delta log while this "
                f"run was writing (its version moved from {expected} to {now}); nothing of this "
                "run was published")

    def _summarize(self, doc: FeedMetadata, written: list[WrittenFile], *,
                   window: Window | None = None, version: int | None = None) -> FeedMetadata:
        """Write ``_metadata.json`` from the log (a summary: never the commit point)."""
        record = self._record("success", written, window=window, version=version)
        table = self.delta.load()
        assert table is not None
        step = update.with_schema(doc, self.columns or doc.schema, self.now)
        if isinstance(step, StreamMetadata):
            new: FeedMetadata = delta.stream_summary(self.delta, table, step)
        else:
            assert isinstance(step, TableMetadata)
            new = delta.table_summary(self.delta, table, step, keep=self.feed.retention_versions)
        new = update.with_export(new, record)
        self.listed = new  # the log's state, whether or not the summary gets written
        try:
            self._commit(new)
        except LakeExportError as exc:
            # The log holds the run: a summary that failed is rebuilt by the next run.
            log.warning("delta.summary_not_written", feed=self.feed.name, error=str(exc),
                        hint="the Delta log holds this run; the next run or `lakeexportd "
                        "repair` rewrites _metadata.json from it")
        if isinstance(new, StreamMetadata):
            failpoint("export.after_commit")
        return new

    def _remove_own_unless_committed(self) -> None:
        """A failed run removes the files it wrote, unless its commit reached the log."""
        try:
            if self._txn is not None:
                table = self.delta.load()
                # Its commit landed if a commit of the log since carries this run's id (the
                # watermark alone cannot say: a realtime rotation of late rows only commits
                # the watermark the previous one set).
                if table is not None and self.delta.transaction_version(table) == self._txn \
                        and any(c.run_id == self.run_id
                                for c in self.delta.history(table, LANDED_LOOKBACK)):
                    return  # the commit landed: the files are the table's now
            # In place (object stores) a sink's created objects are its written files too.
            own = {self.feed_dir / w.partition / w.name if w.partition else self.feed_dir / w.name
                   for w in self._written}
            own.update(path for sink in self._sinks for path in sink.created)
            for path in own:
                self.store.storage.delete(path)
        except (LakeExportError, OSError):
            pass  # left for the vacuum (after the grace)


def _lists_files(doc: FeedMetadata) -> bool:
    if isinstance(doc, StreamMetadata):
        return bool(doc.partitions)
    return bool(doc.versions)


def new_run(**kwargs: object) -> Run:
    """The run for the feed's format."""
    feed = kwargs["feed"]
    cls = DeltaRun if getattr(feed, "format", "parquet") == "delta" else Run
    return cls(**kwargs)  # type: ignore[arg-type]
