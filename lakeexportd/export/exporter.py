"""DataLakeExporter: one export run of one feed (fetch, write, commit, prune).

No scheduling, config loading or metrics serving here: the daemon and the CLI build one with
``exporter_from_config`` (the daemon's sees its requests for metrics), call
``export(feed, now)`` and turn its ``ExportResult`` (or its exception) into logs and metrics.

A run, under the feed's lock:

1. load ``_metadata.json`` (unreadable: fail, never overwrite) and remove files it does not list
   (on an object store nothing here: unlisted objects older than ``orphan_grace`` go after
   the run's own commit, see ``lake.cleanup``);
2. streams ask for ``ROWTIME > watermark AND ROWTIME <= now - settle_delay``; tables scan;
3. check the answer's columns against the recorded schema before writing anything;
4. the sink writes hidden temp files and gives them their final names when the answer is
   complete;
5. one atomic commit lists the new files and moves the watermark (or makes the version
   current), then dropped versions and expired partitions are deleted.

A failure anywhere leaves the last commit as the truth: files no commit lists are orphans the
next run (or ``lakeexportd repair``) removes, and their rows are exported again. A feed's first
run commits an empty document before it writes data, so data in a folder without a document is
never taken for such a leftover: the feed stops, and ``repair --rebuild`` (``rebuild`` here)
reconstructs the document from the files.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from lakeexportd.catalog.policy import follow_catalog, open_catalog
from lakeexportd.config.model import Config, Feed
from lakeexportd.errors import CatalogError, FeedError, LakeStateError
from lakeexportd.export import backfill as backfills
from lakeexportd.export.delta_repair import DeltaRepair, repair_delta
from lakeexportd.export.delta_run import new_run
from lakeexportd.export.realtime import RealtimeFeed
from lakeexportd.export.run import ExportResult, Progress, epoch_ms, new_run_id
from lakeexportd.ksqldb.client import KsqlDBClient, client_from_settings
from lakeexportd.ksqldb.retry import RequestObserver
from lakeexportd.lake import cleanup, delta, layout, rebuild
from lakeexportd.lake.configured import lake_of
from lakeexportd.lake.locking import FeedLock, HeldLock
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import FeedMetadata, StreamMetadata, Window
from lakeexportd.lake.storage import Storage, open_storage

if TYPE_CHECKING:
    from lakeexportd.catalog.iceberg import LakeCatalog

__all__ = [
    "DataLakeExporter", "ExportResult", "Progress", "epoch_ms", "exporter_from_config",
    "new_run_id",
]

log = structlog.get_logger(__name__)


def exporter_from_config(
    config: Config, *, observer: RequestObserver | None = None
) -> DataLakeExporter:
    """The exporter a configuration describes, on a new ksqlDB client it owns (the caller
    closes ``exporter.client``); the daemon passes ``observer`` for its request metrics."""
    client = client_from_settings(config.ksqldb, observer=observer)
    lake = lake_of(config.lake)
    catalog = open_catalog(config.catalog, lake)
    return DataLakeExporter(client, lake.root, lock_wait=config.scheduler.lock_wait,
                            storage=lake.storage, orphan_grace=config.lake.orphan_grace,
                            catalog=catalog)


class DataLakeExporter:
    """Exports feeds from one ksqlDB server into one lake root."""

    def __init__(
        self,
        client: KsqlDBClient,
        lake_root: Path,
        *,
        lock_wait: float = 10.0,
        store: MetadataStore | None = None,
        storage: Storage | None = None,
        orphan_grace: float = 3600.0,
        catalog: LakeCatalog | None = None,
    ) -> None:
        """``storage`` holds the lake at ``lake_root`` (``lake_of(config.lake)`` gives both; a
        local folder when omitted); ``store`` overrides the metadata store built on it.
        ``orphan_grace``: on object stores, unlisted objects younger than this are kept.
        ``catalog``: the Iceberg catalog that follows each Parquet feed's commits."""
        self.client = client
        self.root = lake_root
        self.lock_wait = lock_wait
        self.orphan_grace = orphan_grace
        self.catalog = catalog
        self.store = store or MetadataStore(storage or open_storage(lake_root))
        self._kinds: dict[str, str] = {}  # source -> what DESCRIBE says it is

    def feed_dir(self, feed: Feed) -> Path:
        """The feed's folder; refused if it (or its staging folder) resolves outside the lake,
        e.g. through a symlink: a feed never writes outside its own folder of the lake."""
        path = layout.feed_dir(self.root, feed.kind, feed.name)
        self.store.storage.check_inside(self.root, path)
        if feed.kind == "table":
            self.store.storage.check_inside(self.root, layout.staging_dir(self.root, feed.name))
        return path

    def export(
        self,
        feed: Feed,
        now: dt.datetime,
        *,
        cancel: threading.Event | None = None,
        progress: Progress | None = None,
        run_id: str | None = None,
    ) -> ExportResult:
        """Run one export of ``feed`` as of ``now`` (timezone-aware); raise on failure.

        ``run_id`` names the run in ``_metadata.json`` (the caller's log lines carry the same).
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if feed.realtime:
            raise FeedError(f"feed {feed.name!r} is a `mode: realtime` feed: its push query "
                            "(`lakeexportd run`) exports it, not scheduled runs")
        feed_dir = self.feed_dir(feed)
        self._check_kind(feed, cancel)
        run = new_run(
            client=self.client,
            root=self.root,
            store=self.store,
            feed=feed,
            feed_dir=feed_dir,
            now=now,
            cancel=cancel or threading.Event(),
            progress=progress,
            run_id=run_id,
            orphan_grace=self.orphan_grace,
            catalog=self.catalog,
        )
        dir_mode, _ = layout.modes(feed.security)
        with FeedLock(feed_dir, feed=feed.name, wait=self.lock_wait, dir_mode=dir_mode,
                      storage=self.store.storage) as lock:
            # Debug lines bracketing the time this run holds the feed (inside the lock).
            log.debug("feed.lock_acquired", feed=feed.name, run_id=run.run_id)
            if lock.previous_holder is not None:
                log.warning("feed.lease_taken_over", feed=feed.name, run_id=run.run_id,
                            previous_owner=lock.previous_holder,
                            hint="its holder stopped renewing it for a whole lease_ttl (died, "
                            "hung or cut off); this daemon runs the feed now")
            try:
                return run.execute(fence=lock.check)
            finally:
                log.debug("feed.lock_releasing", feed=feed.name, run_id=run.run_id)

    def realtime(
        self, feed: Feed, *, stop: threading.Event, clock: Callable[[], dt.datetime],
        on_commit: Callable[[RealtimeFeed, FeedMetadata, int], None] | None = None,
    ) -> RealtimeFeed:
        """A realtime feed's runner (DESIGN 14), not started: ``run_realtime`` runs it."""
        if not feed.realtime or feed.kind != "stream":
            raise FeedError(f"feed {feed.name!r} is not a realtime stream")
        return RealtimeFeed(client=self.client, store=self.store, root=self.root, feed=feed,
                            feed_dir=self.feed_dir(feed), stop=stop, clock=clock,
                            orphan_grace=self.orphan_grace, catalog=self.catalog,
                            on_commit=on_commit)

    def run_realtime(self, runner: RealtimeFeed, *, lock_wait: float | None = None) -> None:
        """Hold the feed's lock (a lease on object stores, renewed all along) and run
        ``runner`` until its ``stop`` is set. ``FeedLocked`` when another process holds it
        for ``lock_wait`` seconds; ``LakeStateError`` when the lease is lost meanwhile."""
        feed = runner.feed
        self._check_kind(feed, runner.stop)
        dir_mode, _ = layout.modes(feed.security)
        with FeedLock(runner.feed_dir, feed=feed.name,
                      wait=self.lock_wait if lock_wait is None else lock_wait,
                      dir_mode=dir_mode, storage=self.store.storage) as lock:
            log.info("realtime.lock_acquired", feed=feed.name,
                     previous_owner=lock.previous_holder)
            runner.held = HeldLock(lock)
            try:
                runner.run(fence=lock.check)
            finally:
                runner.held = None
                log.info("realtime.lock_releasing", feed=feed.name, state=runner.state)

    def _check_kind(self, feed: Feed, cancel: threading.Event | None = None) -> None:
        """The declared kind must be what ksqlDB says the source is (once per source).

        A table exported as a stream piles up every update as a new row; a stream exported as
        a table is re-snapshotted whole on every run.
        """
        actual = self._kinds.get(feed.source)
        if actual is None:
            actual = self._kinds[feed.source] = self.client.describe(
                feed.source, cancel=cancel
            ).kind
        if actual != feed.kind:
            raise FeedError(
                f"feed {feed.name!r} declares kind {feed.kind!r}, but ksqlDB says "
                f"{feed.source} is a {actual.upper()}; set `kind: {actual}` for it (under a new "
                "feed name if this one already exported data as the wrong kind)"
            )

    def backfill(
        self, feed: Feed, window: Window, now: dt.datetime, *,
        confirm: Callable[[list[str]], bool],
    ) -> backfills.Result | None:
        """Re-export ``window`` of a stream exactly once (see ``backfill``); ``confirm`` sees
        the plan first (``None`` when it declined)."""
        if feed.kind != "stream":
            raise FeedError(f"feed {feed.name!r} is a table: its next run takes a whole new "
                            "snapshot, so there is nothing to backfill")
        feed_dir = self.feed_dir(feed)
        dir_mode, _ = layout.modes(feed.security)
        with FeedLock(feed_dir, feed=feed.name, wait=self.lock_wait, dir_mode=dir_mode,
                      storage=self.store.storage):
            doc = self.store.load(feed_dir)
            if not isinstance(doc, StreamMetadata) or doc.watermark_ms is None:
                raise FeedError(f"feed {feed.name!r} has not exported yet: nothing to backfill")
            plan = backfills.plan(feed_dir, doc, window, storage=self.store.storage)
            if not confirm(plan.describe(feed.name)):
                return None
            result = backfills.run(self.client, self.store, feed, feed_dir, doc, plan, now=now,
                                   run_id="backfill-" + new_run_id(now),
                                   follow=follow_catalog(self.catalog, feed))
        log.info("export.backfilled", feed=feed.name, from_ms=window.from_ms,
                 to_ms=window.to_ms, rows=result.rows, window_rows=result.window_rows,
                 files=result.files, replaced=len(plan.replaced))
        return result

    def rebuild(
        self, feed: Feed, *, confirm: Callable[[list[str]], bool]
    ) -> rebuild.Rebuilt | None:
        """Rebuild a missing ``_metadata.json`` from the feed's files, under the feed lock.

        ``confirm`` sees what would be written and says whether to write it; the document is
        committed only then (``None`` when it declined). A readable document is never replaced.
        """
        feed_dir = self.feed_dir(feed)
        path = layout.metadata_path(feed_dir)
        if not self.store.storage.is_dir(feed_dir):
            raise LakeStateError(
                f"feed {feed.name!r}: {feed_dir} does not exist; nothing to rebuild"
            )
        if feed.format == "delta" or delta.is_delta(self.store.storage, feed_dir):
            raise LakeStateError(
                f"feed {feed.name!r} is a Delta table: its log is the truth, and "
                f"`lakeexportd repair {feed.name}` (without --rebuild) writes _metadata.json "
                "from it")
        dir_mode, file_mode = layout.modes(feed.security)
        with FeedLock(feed_dir, feed=feed.name, wait=self.lock_wait, dir_mode=dir_mode,
                      storage=self.store.storage):
            if self.store.storage.exists(path):
                raise LakeStateError(
                    f"feed {feed.name!r}: {path} exists; --rebuild only writes a missing "
                    f"document. If it is damaged, move it aside (mv {path} {path}.broken) first"
                )
            if feed.kind == "stream":
                rebuilt = rebuild.rebuild_stream(
                    feed_dir, feed=feed.name, source=feed.source,
                    event_time=feed.event_time or "ROWTIME", storage=self.store.storage,
                )
            else:
                rebuilt = rebuild.rebuild_table(feed_dir, feed=feed.name, source=feed.source,
                                                storage=self.store.storage)
            if not confirm(rebuild.describe(rebuilt)):
                return None
            if self.store.load(feed_dir) is not None:
                raise LakeStateError(f"feed {feed.name!r}: {path} appeared meanwhile; not replaced")
            self.store.commit(feed_dir, rebuilt.doc, file_mode=file_mode)
        log.warning("metadata.rebuilt", feed=feed.name, files=rebuilt.files,
                    records=rebuilt.doc.total_records)
        return rebuilt

    def repair(self, feed: Feed, *, dry_run: bool = False) -> cleanup.Sweep | DeltaRepair:
        """Remove (or only list) every file of ``feed`` its ``_metadata.json`` does not list;
        on an object store only those older than ``orphan_grace`` (the rest is kept).
        A Delta feed (configured so, or holding a Delta log) is repaired from its log
        (``delta_repair``): never by the Parquet rules, which would take files older
        versions still read for leftovers."""
        feed_dir = self.feed_dir(feed)
        dir_mode, file_mode = layout.modes(feed.security)
        storage = self.store.storage
        with FeedLock(feed_dir, feed=feed.name, wait=self.lock_wait, dir_mode=dir_mode,
                      storage=storage):
            if feed.format == "delta" or delta.is_delta(storage, feed_dir):
                repaired = repair_delta(self.store, feed_dir, feed, dry_run=dry_run,
                                        grace=self.orphan_grace if storage.leases else 0.0,
                                        file_mode=file_mode)
                if not dry_run and (repaired.removed or repaired.summary):
                    log.info("metadata.repaired", feed=feed.name, format="delta",
                             removed=[str(p) for p in repaired.removed],
                             summary=repaired.summary, delta_version=repaired.delta_version)
                return repaired
            follow = follow_catalog(self.catalog, feed)
            if not dry_run and follow is not None and not follow():
                raise CatalogError(
                    f"feed {feed.name!r}: its catalog table is behind the lake, and may still "
                    "list files _metadata.json no longer does: repair deleted nothing. Bring "
                    f"the catalog level (`lakeexportd catalog sync {feed.name}`), then repair "
                    "again (--dry-run lists what it would remove)")
            doc = self.store.load(feed_dir)
            staging = layout.staging_dir(self.root, feed.name) if feed.kind == "table" else None
            swept = cleanup.sweep(
                feed_dir, doc, kind=feed.kind, staging_dir=staging, dry_run=dry_run,
                storage=storage, grace=self.orphan_grace if storage.leases else 0.0,
            )
        if swept.removed and not dry_run:
            log.info("metadata.repaired", feed=feed.name, removed=[str(p) for p in swept.removed])
        return swept
