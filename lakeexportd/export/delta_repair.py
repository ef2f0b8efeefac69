"""``lakeexportd repair`` of a Delta feed: the log is the truth, ``_metadata.json`` its summary.

Two things, under the feed's lock:

1. files in the table's folder that no Delta commit lists (a dry ``vacuum(full=True)`` at
   retention 0, minus what the log's tombstones keep for time travel). lakeexportd's own
   (``data_*.parquet``, ``snapshot_*.parquet`` and their ``.<name>.tmp``) are what an
   interrupted run left: removed, on object stores only once older than ``lake.orphan_grace``
   (a writer that lost its lease while paused may still commit younger ones; they are listed
   as kept with their ages). Any other file is reported and never deleted. Files that older
   versions still read are not touched: that is the export's vacuum, within retention.
2. ``_metadata.json`` rewritten from the log (``lake.delta.stream_summary`` /
   ``table_summary``) when it says something else, or is missing. The document's own history
   (``exports``, the ksqlDB schema) is kept. A document that cannot be read is not
   overwritten: moved aside by the operator, the next repair writes a new one.

``dry_run`` lists all of it and changes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from lakeexportd.config.model import Feed
from lakeexportd.lake import delta
from lakeexportd.lake import metadata_update as update
from lakeexportd.lake.delta import DeltaFeed
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_codec import encode
from lakeexportd.lake.metadata_model import FeedMetadata, StreamMetadata, TableMetadata


@dataclass
class DeltaRepair:
    """What a repair of a Delta feed removed (or, dry, would remove), kept and left alone."""

    removed: list[Path] = field(default_factory=list)  # lakeexportd's untracked files
    kept: list[tuple[Path, float]] = field(default_factory=list)  # younger than the grace
    foreign: list[Path] = field(default_factory=list)  # untracked, not ours: never deleted
    summary: str | None = None  # why _metadata.json was (or would be) rewritten
    delta_version: int | None = None


def summarised(feed: DeltaFeed, table: delta.Table, doc: FeedMetadata, *,
               keep: int) -> FeedMetadata:
    """``doc`` with what the log says (files, totals, watermark or versions, Delta version)."""
    if isinstance(doc, StreamMetadata):
        return delta.stream_summary(feed, table, doc)
    assert isinstance(doc, TableMetadata)
    return delta.table_summary(feed, table, doc, keep=keep)


def repair_delta(store: MetadataStore, feed_dir: Path, feed: Feed, *, grace: float,
                 dry_run: bool, file_mode: int, now: float | None = None) -> DeltaRepair:
    """Repair ``feed``'s Delta table folder (the caller holds the feed's lock)."""
    storage = store.storage
    target = DeltaFeed(storage, feed_dir, feed.name)
    table = target.load()
    if table is None:
        return DeltaRepair()
    now = time.time() if now is None else now
    found = delta.vacuum(target, table, retention_s=0.0, dry_run=True)
    ages = {Path(e.path): now - e.mtime_ns / 1e9 for e in storage.walk_files(feed_dir)}
    out = DeltaRepair(delta_version=table.version())
    for path in (_path(target, p) for p in found.leftovers):
        age = ages.get(path, 0.0)
        if age >= grace:
            out.removed.append(path)
        else:
            out.kept.append((path, age))
    out.foreign = [_path(target, p) for p in found.foreign]
    doc = store.load(feed_dir)  # unreadable: LakeStateError with what to do (never overwritten)
    base = doc if doc is not None else update.new_document(feed.kind, feed=feed.name,
                                                           source=feed.source)
    new = summarised(target, table, base, keep=feed.retention_versions)
    if doc is None:
        out.summary = "missing"
    elif encode(new) != encode(doc):
        out.summary = "differs from the Delta log"
    if dry_run:
        return out
    for path in out.removed:
        storage.delete(path)
    if out.summary is not None:
        store.commit(feed_dir, new, file_mode=file_mode)
    return out


def _path(feed: DeltaFeed, path: str) -> Path:
    """A vacuum path (relative to the table, percent-encoded) as a location of the lake."""
    return feed.feed_dir / feed.relative(path)

