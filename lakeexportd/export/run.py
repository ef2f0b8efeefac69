"""One export run of one feed, step by step (``DataLakeExporter.export`` runs it under the lock).

The steps and why they are safe are described in ``exporter``'s docstring; ``Run`` holds the
state of one run, ``ExportResult`` is what a successful run reports.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from lakeexportd.catalog.policy import in_catalog
from lakeexportd.config.model import Feed
from lakeexportd.errors import (
    CommitOutcomeUnknown,
    ExportAborted,
    LakeExportError,
    LakeStateError,
    RejectedValueError,
    SchemaError,
)
from lakeexportd.export.overlap import Overlap, overlap_start
from lakeexportd.failpoints import failpoint
from lakeexportd.ksqldb import sql
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.lake import cleanup, delta, layout
from lakeexportd.lake import metadata_update as update
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import (
    ExportRecord,
    FeedMetadata,
    Offsets,
    Partition,
    SchemaColumn,
    StreamMetadata,
    TableMetadata,
    Window,
    WrittenFile,
    added_time,
    current_file_count,
    iso_utc,
)
from lakeexportd.lake.sinks import BUFFER_BYTES, AppendSink, SnapshotSink

if TYPE_CHECKING:
    from lakeexportd.catalog.iceberg import LakeCatalog

Progress = Callable[[int], None]
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ExportResult:
    """What one successful run did."""

    feed: str
    kind: Literal["stream", "table"]
    run_id: str
    rows: int
    files: int
    bytes: int
    started: dt.datetime
    duration_s: float
    watermark_ms: int | None = None  # streams: upper bound of the committed window
    window_from_ms: int | None = None
    version: int | None = None  # tables: the new current version
    versions_kept: int | None = None
    scan_started_ms: int | None = None  # tables: when the snapshot's scan began
    orphans_removed: int = 0
    # What the feed lists after the run (streams: every day; tables: the current version;
    # Delta feeds: the log's active files), for the files and bytes gauges.
    listed_files: int | None = None
    listed_bytes: int | None = None
    delta_version: int | None = None  # Delta feeds: the table version after the run
    # With a catalog: None when it is level with this commit, else why it is behind.
    catalog_behind: str | None = None
    catalogued: bool = False  # the feed has a catalog to follow it (a Parquet feed)


def epoch_ms(moment: dt.datetime) -> int:
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def _delta_version(doc: FeedMetadata | None) -> int | None:
    version = doc.extra.get("delta_version") if doc is not None else None
    return version if isinstance(version, int) else None


def new_run_id(now: dt.datetime) -> str:
    return f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class Run:
    """The state of one run; ``execute`` is called with the feed's lock held."""

    def __init__(
        self,
        *,
        client: KsqlDBClient,
        root: Path,
        store: MetadataStore,
        feed: Feed,
        feed_dir: Path,
        now: dt.datetime,
        cancel: threading.Event,
        progress: Progress | None,
        run_id: str | None,
        orphan_grace: float = 3600.0,
        catalog: LakeCatalog | None = None,
    ) -> None:
        self.client = client
        self.root = root
        self.store = store
        self.feed = feed
        self.now = now.astimezone(dt.UTC)
        self.run_id = run_id or new_run_id(self.now)
        self.cancel = cancel
        self.progress = progress
        self.feed_dir = feed_dir
        self.staging = layout.staging_dir(root, feed.name) if feed.kind == "table" else None
        self.file_mode = layout.modes(feed.security)[1]
        self.started = time.monotonic()
        self.rows = 0
        self.columns: tuple[SchemaColumn, ...] = ()  # set from the answer's header
        self._fence: Callable[[], None] = lambda: None  # set by execute()
        # Object stores: a writer that lost its lease while paused may still commit what it
        # wrote, so unlisted objects are left for orphan_grace (local lakes: flock, no grace).
        self.leases = store.storage.leases
        self.orphan_grace = orphan_grace
        self._sinks: list[AppendSink | SnapshotSink] = []  # what they created is this run's
        self.listed: FeedMetadata | None = None  # the last document committed (or summarised)
        # The Iceberg catalog that follows a Parquet feed's commits (DESIGN 13), and why it is
        # behind this run's commit (None: level, or no catalog).
        self.catalog = catalog if in_catalog(feed) else None
        self.catalog_behind: str | None = None
        self._removed: list[Path] = []  # leftovers prepare() removed

    def execute(self, fence: Callable[[], None] = lambda: None) -> ExportResult:
        """Run it; ``fence`` is called right before every commit and raises when this run
        may no longer commit (its feed's lease was lost: another writer may hold it)."""
        self._fence = fence
        doc = self.prepare()
        try:
            if isinstance(doc, StreamMetadata):
                result = self._stream(doc)
            else:
                assert isinstance(doc, TableMetadata)
                result = self._table(doc)
        except BaseException as exc:
            # Whatever a failed run left (temps a sink could not remove, files renamed before a
            # failed commit) goes now, under the lock, rather than at the next run; unless its
            # commit may still land: then the next run judges the files by what is committed.
            if not isinstance(exc, CommitOutcomeUnknown):
                self._remove_unlisted()
            self._record_failure(doc, exc)
            raise
        if self.leases and self.catalog_behind is None:
            removed = self._sweep_after_commit()
        else:
            removed = self._removed
        return dataclasses.replace(result, orphans_removed=len(removed),
                                   catalog_behind=self.catalog_behind,
                                   catalogued=self.catalog is not None)

    def prepare(self) -> FeedMetadata:
        """The committed document, with the lake made ready for a run: the format checked,
        leftovers of earlier runs removed (local lakes), a first (empty) document committed."""
        doc = self.store.load(self.feed_dir)
        if delta.is_delta(self.store.storage, self.feed_dir):
            raise LakeStateError(
                f"feed {self.feed.name!r} is a Delta table "
                f"({self.store.storage.show(self.feed_dir)}) but is configured `format: parquet`: "
                "a feed's format cannot change in place. "
                "Set `format: delta` back, or export Parquet under a new feed name")
        removed: list[Path] = []
        # Unlisted files may still be in a catalog that fell behind (a deferred delete):
        # bring it level first, or keep them until it is.
        catalog_level = self.catalog is None or self._catalog_caught_up()
        if not self.leases and catalog_level:  # a local lake: the flock excludes every other writer
            removed = cleanup.remove_orphans(
                self.feed_dir, doc, kind=self.feed.kind, staging_dir=self.staging,
                storage=self.store.storage,
            )
            self._log_removed(removed)
        self._removed = removed
        failpoint("export.after_cleanup")
        if doc is None:
            doc = update.new_document(self.feed.kind, feed=self.feed.name, source=self.feed.source)
            # The first run commits an empty document before it writes any data: from then on a
            # data file without a document is never a leftover (cleanup.MetadataMissingError).
            self._commit(doc)
        return doc

    # -- the catalog -----------------------------------------------------------------------

    def _catalog_caught_up(self) -> bool:
        """Before the run's cleanup: a catalog not known to be level is synced now; if it
        cannot be, files it may still list are kept (the run itself goes on)."""
        assert self.catalog is not None
        if self.catalog.known_level(self.feed.name):
            return True
        return self._follow_catalog()

    def _follow_catalog(self) -> bool:
        """The catalog follows the lake's commit; a catalog that is down, slow or refuses is
        logged and the feed marked behind, never a failed run (the lake's commit stands).
        One that failed at this run's start is not asked again (nor waited for twice)."""
        if self.catalog is None:
            return True
        if self.catalog_behind is not None:
            return False
        self.catalog_behind = self.catalog.follow(self.feed, run_id=self.run_id)
        return self.catalog_behind is None

    def _log_removed(self, removed: list[Path]) -> None:
        if removed:
            log.warning(
                "metadata.orphans_removed",
                feed=self.feed.name,
                removed=[str(p) for p in removed],
                hint="files no commit lists: an interrupted run's (their rows are exported "
                "again), or deletes deferred while the catalog was behind",
            )

    def _sweep_after_commit(self) -> list[Path]:
        """Object stores, after this run's commit: unlisted objects older than the grace."""
        try:
            swept = cleanup.sweep(
                self.feed_dir, self.store.load(self.feed_dir), kind=self.feed.kind,
                staging_dir=self.staging, storage=self.store.storage, grace=self.orphan_grace,
            )
        except LakeExportError as exc:  # committed already: the run stands, the next sweeps
            log.warning("metadata.orphans_not_removed", feed=self.feed.name, error=str(exc),
                        hint="the next successful run or `lakeexportd repair` removes them")
            return []
        self._log_removed(swept.removed)
        if swept.kept:
            log.info("metadata.orphans_kept", feed=self.feed.name, count=len(swept.kept),
                     youngest_s=round(min(age for _, age in swept.kept), 1),
                     grace_s=self.orphan_grace,
                     hint="unlisted objects younger than lake.orphan_grace are kept (a paused "
                     "writer may still commit them); a later run removes them")
        return swept.removed

    # -- streams ---------------------------------------------------------------------------

    def _stream(self, doc: StreamMetadata) -> ExportResult:
        feed = self.feed
        upper = epoch_ms(self.now) - round(feed.settle_delay * 1000)
        lower = doc.watermark_ms
        written: list[WrittenFile] = []
        window = Window(lower, upper)
        overlap = None
        if doc.offsets is not None and lower is not None:  # the feed ran in real time
            if upper <= lower:  # wait until the window reaches past its watermark
                log_waiting_after_realtime(feed, lower, upper)
                record = self._record("success", [], window=Window(lower, lower))
                self._commit_stream(doc, record, [], watermark_ms=lower, offsets=doc.offsets)
                return self._result([], watermark_ms=lower, window_from_ms=lower)
            overlap, start = self._overlap(doc, lower)
            window = Window(start, upper)
            written = self._write_stream(doc, start, upper, overlap)
            log.info("export.after_realtime", feed=feed.name, run_id=self.run_id,
                     from_ms=start, realtime_watermark_ms=lower, left_out=overlap.dropped,
                     hint="the first batch run after real time starts settle_delay before "
                     "its watermark; the rows of that overlap the lake holds were left out")
            lower = start
        elif lower is None and feed.start == "now":
            # First run of a feed that starts now: commit the watermark, export nothing. Its
            # window is empty, not "everything up to now": the history was skipped on purpose,
            # and verify --source must not count it as late rows.
            window = Window(upper, upper)
        elif lower is not None and upper <= lower:
            upper = lower  # the clock has not passed the watermark yet: an empty run
        else:
            written = self._write_stream(doc, lower, upper)
        record = self._record("success", written, window=window)
        self._commit_stream(doc, record, written, watermark_ms=upper)
        return self._result(written, watermark_ms=upper, window_from_ms=lower)

    def _commit_stream(
        self, doc: StreamMetadata, record: ExportRecord, written: list[WrittenFile], *,
        watermark_ms: int, offsets: Offsets | None = None,
    ) -> StreamMetadata:
        """Commit ``written`` with the watermark (and a realtime feed's ``offsets``; a batch
        run clears them), retention and expired compaction inputs; then delete what the
        commit dropped once the catalog is level."""
        columns = self.columns or doc.schema  # no query ran: the schema stays as it was
        new = update.after_stream_run(
            doc, record=record, written=written, columns=columns, watermark_ms=watermark_ms,
            now=self.now,
        )
        # A batch run's watermark makes a realtime run's offsets stale: a later switch back
        # to realtime starts after this watermark (DESIGN 14).
        new = dataclasses.replace(new, offsets=offsets)
        dropped: tuple[Partition, ...] = ()
        if self.feed.retention_days is not None:
            cutoff = layout.retention_cutoff(self.now, self.feed.retention_days,
                                             self.feed.timezone)
            new, dropped = update.without_partitions_before(new, cutoff)
        # Compaction inputs past their grace leave the document with this commit, then the disk.
        new, expired = update.expire_retired(new, self.now, self.orphan_grace)
        self._commit(new)
        failpoint("export.after_commit")
        # Files the commit dropped go once the catalog no longer lists them either; a catalog
        # left behind keeps them (unlisted: a later run's cleanup takes them when it is level).
        if self._follow_catalog():
            if dropped:
                cleanup.delete_partitions(self.feed_dir, dropped, storage=self.store.storage)
            if expired:
                cleanup.delete_retired(self.feed_dir, expired, storage=self.store.storage)
        failpoint("export.after_prune")
        return new

    def _overlap(self, doc: StreamMetadata, watermark: int) -> tuple[Overlap, int]:
        """The first batch run after real time starts ``settle_delay`` before the realtime
        watermark (not before the realtime start time: earlier batch runs hold those rows),
        and leaves out the rows of that overlap the lake holds (``export.overlap``)."""
        assert doc.offsets is not None
        lower = overlap_start(watermark, self.feed.settle_delay, doc.offsets.after_ms)
        # Files that may hold rows of the overlap: committed since an hour before it (a row
        # is committed after it arrives, and arrives after its ROWTIME, give or take the
        # producer's clock), or whose ROWTIME range reaches into it.
        since = lower - 3_600_000
        rowtime = self.feed.event_time is None
        paths = [self.feed_dir / p.path / f.name for p in doc.partitions for f in p.files
                 if (when := added_time(f)) is None or epoch_ms(when) >= since
                 or (rowtime and f.max_event_ms is not None and f.max_event_ms > lower)]
        storage = self.store.storage

        def tables() -> Iterator[pa.Table]:
            for path in paths:
                with storage.open_read(path) as source:
                    yield pq.read_table(source)

        columns = [c.name for c in doc.schema]
        return Overlap(lower, watermark, tables(), columns), lower

    def _write_stream(
        self, doc: StreamMetadata, lower: int | None, upper: int, overlap: Overlap | None = None
    ) -> list[WrittenFile]:
        feed = self.feed
        query = sql.stream_window(feed.source, lower, upper)
        with self.client.query(query, batch_size=feed.batch_size, cancel=self.cancel) as result:
            self.columns = self._checked_columns(doc, result.schema)
            with self._append_sink(result.schema) as sink:
                for batch in self._batches(result.batches()):
                    sink.write(batch if overlap is None else overlap.new_rows(batch))
                return sink.finish()

    def _append_sink(self, schema: pa.Schema, *, buffer_bytes: int = BUFFER_BYTES) -> AppendSink:
        """The feed's stream sink for ``schema``, this run's (what it creates is the run's)."""
        feed = self.feed
        sink = AppendSink(
            self.feed_dir, schema, run_start=self.now, event_time=feed.event_time or "ROWTIME",
            timezone=feed.timezone, security=feed.security,
            max_open_partitions=feed.max_open_partitions,
            max_rows_per_file=feed.max_rows_per_file, storage=self.store.storage,
            buffer_bytes=buffer_bytes)
        self._sinks.append(sink)
        return sink

    # -- tables ----------------------------------------------------------------------------

    def _table(self, doc: TableMetadata) -> ExportResult:
        feed = self.feed
        # A version folder no commit lists may exist (on object stores a failed or paused
        # writer's, kept for orphan_grace; anywhere one holding a file lakeexportd does not
        # write, which cleanup leaves): never write into it, take the next number.
        version = max([update.next_version(doc),
                       *(n + 1 for e in self.store.storage.list_dir(self.feed_dir)
                         if e.is_dir and (n := layout.version_number(e.name)) is not None)])
        scan_started = epoch_ms(self.now)
        with self.client.query(
            sql.table_scan(feed.source), batch_size=feed.batch_size, cancel=self.cancel
        ) as result:
            self.columns = self._checked_columns(doc, result.schema)
            with SnapshotSink(
                self.root,
                feed.name,
                result.schema,
                version=version,
                run_start=self.now,
                security=feed.security,
                max_rows_per_file=feed.max_rows_per_file,
                storage=self.store.storage,
            ) as sink:
                self._sinks.append(sink)
                for batch in self._batches(result.batches()):
                    sink.write(batch)
                written = sink.publish()
        record = self._record("success", written, version=version)
        new, dropped = update.after_table_run(
            doc,
            record=record,
            version=version,
            files=written,
            columns=self.columns,
            retention_versions=feed.retention_versions,
            now=self.now,
        )
        self._commit(new)
        failpoint("export.after_commit")
        if self._follow_catalog() and dropped:  # as for streams: after the catalog is level
            cleanup.delete_versions(self.feed_dir, dropped, storage=self.store.storage)
        failpoint("export.after_prune")
        return self._result(
            written, version=version, versions_kept=len(new.versions), scan_started_ms=scan_started
        )

    # -- shared steps ----------------------------------------------------------------------

    def _result(self, written: list[WrittenFile], **details: int | None) -> ExportResult:
        listed = self.listed
        return ExportResult(
            feed=self.feed.name,
            kind=self.feed.kind,
            run_id=self.run_id,
            rows=sum(w.records for w in written),
            files=len(written),
            bytes=sum(w.size_bytes for w in written),
            started=self.now,
            duration_s=time.monotonic() - self.started,
            listed_files=current_file_count(listed) if listed is not None else None,
            listed_bytes=listed.total_size_bytes if listed is not None else None,
            delta_version=_delta_version(listed),
            **details,  # type: ignore[arg-type]
        )

    def _batches(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        failpoint("export.after_header")
        try:
            for batch in batches:
                if self.cancel.is_set():
                    raise ExportAborted(
                        f"feed {self.feed.name!r}: export stopped by shutdown after "
                        f"{self.rows} rows; nothing was published and the next run exports them"
                    )
                self.rows += batch.num_rows
                yield batch
                if self.rows == batch.num_rows:
                    failpoint("export.after_first_batch")
                if self.progress is not None:
                    self.progress(self.rows)
        except RejectedValueError as exc:  # the decoder knows the row, not the feed
            raise exc.for_feed(self.feed.name) from exc

    def _checked_columns(self, doc: FeedMetadata, schema: pa.Schema) -> tuple[SchemaColumn, ...]:
        """The answer's columns; a removed or retyped column fails before anything is written."""
        columns = update.columns_of(schema, feed=self.feed.name)
        new = {c.name: c for c in columns}
        problems = []
        for old in doc.schema:
            now = new.get(old.name)
            if now is None:
                problems.append(f"column {old.name} ({old.ksql_type}) was removed")
            elif now.ksql_type != old.ksql_type:
                problems.append(
                    f"column {old.name} changed type from {old.ksql_type} to {now.ksql_type}"
                )
        if problems:
            raise SchemaError(
                f"feed {self.feed.name!r}: the schema of {self.feed.source} changed "
                f"incompatibly: {'; '.join(problems)}. Nothing was written. Files in the lake "
                "keep the old schema, so readers could not combine them: export the new schema "
                "under a new feed name (added columns alone are accepted)"
            )
        return columns

    def _record(
        self,
        status: str,
        written: list[WrittenFile],
        *,
        window: Window | None = None,
        version: int | None = None,
        error: str | None = None,
    ) -> ExportRecord:
        finished = self.now + dt.timedelta(seconds=time.monotonic() - self.started)
        return ExportRecord(
            run_id=self.run_id,
            started=iso_utc(self.now),
            finished=iso_utc(finished),
            records=sum(w.records for w in written),
            status=status,
            window=window,
            error=error,
            files=len(written),
            size_bytes=sum(w.size_bytes for w in written),
            version=version,
        )

    def _commit(self, doc: FeedMetadata) -> None:
        failpoint("export.before_commit")
        self._fence()
        # A failed commit leaves renamed files unlisted: execute() removes them right away.
        self.store.commit(self.feed_dir, doc, file_mode=self.file_mode)
        self.listed = doc
        log.info(
            "metadata.committed",
            feed=self.feed.name,
            run_id=self.run_id,
            total_records=doc.total_records,
            total_size_bytes=doc.total_size_bytes,
        )

    def _remove_unlisted(self) -> None:
        """Remove what the metadata on disk does not list (it is the truth, whatever failed);
        on object stores only what this run created (others' may still be committed)."""
        try:
            doc = self.store.load(self.feed_dir)
            if self.leases:
                created = [path for sink in self._sinks for path in sink.created]
                removed = cleanup.remove_own(self.feed_dir, doc, created,
                                             storage=self.store.storage)
                if removed:
                    log.info("metadata.own_files_removed", feed=self.feed.name,
                             run_id=self.run_id, removed=[str(p) for p in removed],
                             hint="this failed run's own objects; no commit lists them")
                return
            if self.catalog is not None and not self.catalog.known_level(self.feed.name):
                return  # unlisted files may be deferred deletes a lagging catalog still lists
            cleanup.remove_orphans(
                self.feed_dir,
                doc,
                kind=self.feed.kind,
                staging_dir=self.staging,
                storage=self.store.storage,
            )
        except LakeExportError:
            pass  # the next run's cleanup tries again

    def _record_failure(self, doc: FeedMetadata, exc: BaseException) -> None:
        """Add the failed run to the history; the files and watermark stay as committed."""
        if not isinstance(exc, Exception):
            return
        try:
            self._fence()
        except LakeExportError:
            return  # the lease is lost: the feed is another writer's now, even its history
        record = self._record("failed", [], error=f"{type(exc).__name__}: {exc}"[:2000])
        try:
            # A fresh load: the commit guard wants one, and a commit that failed after its
            # rename must not be undone by writing the older document back.
            current = self.store.load(self.feed_dir) or doc
            self.store.commit(
                self.feed_dir, update.with_export(current, record), file_mode=self.file_mode
            )
        except (LakeExportError, OSError):
            pass  # disk full or read-only: the run failed either way, and says so


def log_waiting_after_realtime(feed: Feed, watermark: int, upper: int) -> None:
    """The first batch run after real time waits until its window passes the watermark."""
    log.info("export.waiting_after_realtime", feed=feed.name, realtime_watermark_ms=watermark,
             wait_s=round((watermark - upper) / 1000, 3),
             hint="the first batch run after real time starts settle_delay before the newest "
             "ROWTIME the realtime feed committed, once now - settle_delay has passed it")
