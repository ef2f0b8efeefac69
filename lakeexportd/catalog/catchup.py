"""``lakeexportd catalog sync``: bring a feed's table level by hand, under the feed's lock.

The lock is the one every export, compaction and repair of the feed takes (``FeedLock``), so a
sync never interleaves with a run of the same feed in this or another process: the run's own
sync and this one cannot both diff against the same lake document. (Two syncs that did race
would still be safe, the commit being a compare-and-swap; the lock makes the outcome the one
the operator asked for.)

Once the table is level, the files a commit dropped while the catalog was behind (retention,
old table versions, expired compaction inputs: unlisted, kept for the catalog's readers) are
deleted, as the next export's start would do. On a local lake only: the flock excludes every
other writer there, so whatever is unlisted is a leftover; on an object store the next run's
sweep takes them after ``lake.orphan_grace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import structlog

from lakeexportd.catalog.iceberg import LakeCatalog, SyncResult
from lakeexportd.config.model import Feed
from lakeexportd.lake import cleanup, layout
from lakeexportd.lake.locking import FeedLock

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CatchUp:
    """One ``catalog sync`` of one feed: the sync, and the deferred deletes it allowed."""

    sync: SyncResult
    deleted: list[Path] = field(default_factory=list)
    locked: bool = True  # False: the feed has no folder yet (never exported), nothing to lock


def sync_locked(catalog: LakeCatalog, feed: Feed, *, lock_wait: float) -> CatchUp:
    """Sync ``feed`` under its lock (``FeedLocked`` after ``lock_wait`` s: an export holds
    it), then delete the files the lake dropped while the catalog was behind (local lake)."""
    storage = catalog.lake.storage
    root = catalog.lake.root
    feed_dir = layout.feed_dir(root, feed.kind, feed.name)
    if not storage.is_dir(feed_dir):  # locking would create the folder of a feed never run
        return CatchUp(catalog.sync(feed), locked=False)
    dir_mode, _ = layout.modes(feed.security)
    with FeedLock(feed_dir, feed=feed.name, wait=lock_wait, dir_mode=dir_mode, storage=storage):
        synced = catalog.sync(feed)
        if storage.leases or synced.waiting:
            return CatchUp(synced)
        staging = layout.staging_dir(root, feed.name) if feed.kind == "table" else None
        deleted = cleanup.remove_orphans(feed_dir, catalog.store.load(feed_dir), kind=feed.kind,
                                         staging_dir=staging, storage=storage)
    if deleted:
        log.info("catalog.deferred_deleted", feed=feed.name, count=len(deleted),
                 hint="files the lake dropped while the catalog was behind")
    return CatchUp(synced, deleted)
