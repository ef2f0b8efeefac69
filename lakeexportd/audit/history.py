"""A feed's commits, newest first: what ``lakeexportd history FEED`` prints.

Plain Parquet keeps no log, so the history is read from ``_metadata.json``:

- a table: every version still kept in ``versions`` (readable: ``files --version N``), and the
  older ones the ``exports`` history still names (pruned by ``retention_versions``: shown,
  marked not readable). Its time is the run's commit time (``finished``), or the version's
  ``created`` once the run has left the history.
- a stream: every successful run in ``exports``, operation ``append`` (``backfill`` for a
  backfill), an empty run with 0 rows; not readable once none of its files is listed any more
  (``retention_days``, or replaced by a backfill). ``exports`` keeps the last 100 runs, so older
  commits are not shown. Parquet streams have no version numbers.

Failed runs committed nothing and are not listed. ``HistoryEntry`` is the one shape every
table format fills (a Delta feed's from its log). Read-only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path, PurePath

from lakeexportd.lake import delta, layout
from lakeexportd.lake.metadata_model import (
    ExportRecord,
    FeedMetadata,
    StreamMetadata,
    TableMetadata,
    Version,
    iso_utc,
    listed_files,
    parse_iso,
)
from lakeexportd.lake.storage import Storage

BACKFILL_PREFIX = "backfill-"


@dataclass(frozen=True)
class HistoryEntry:
    """One commit of a feed. ``version`` is None for a Parquet stream (no numbered
    versions); ``rows``/``bytes``/``files`` are None where the record does not say."""

    version: int | None
    time: str  # the commit time, ISO UTC (``2025-01-15T14:30:00Z``)
    operation: str  # "append", "backfill", "overwrite" (a Delta log's own names for Delta)
    rows: int | None
    bytes: int | None
    files: int | None
    run_id: str | None = None
    current: bool = False  # a table's version readers read now
    readable: bool = True  # False: its files are gone (retention), time travel cannot reach it


def history(storage: Storage, feed_dir: PurePath, doc: FeedMetadata | None, *,
            limit: int | None = None) -> list[HistoryEntry]:
    """The commits of the feed at ``feed_dir`` whose document is ``doc``, newest first (at
    most ``limit``). A Delta feed's come from its log (``doc`` may be lost: the log is the
    truth); plain Parquet's from ``doc``."""
    if delta.is_delta(storage, feed_dir):
        return _delta(storage, feed_dir, doc, limit)
    if doc is None:
        return []
    entries = _stream(doc) if isinstance(doc, StreamMetadata) else _table(doc)
    return entries if limit is None else entries[:limit]


_DELTA_OPERATIONS = {"Append": "append", "Overwrite": "overwrite"}


def _delta(storage: Storage, feed_dir: PurePath, doc: FeedMetadata | None,
           limit: int | None) -> list[HistoryEntry]:
    """A Delta log's commits. Readable: a table's versions from the oldest snapshot the
    summary keeps; a stream's, unless a vacuum ran more than a week (``STREAM_KEEP_S``) after
    them (it may have removed files they read)."""
    feed = delta.DeltaFeed(storage, Path(feed_dir), feed_dir.name)
    table = feed.load()
    if table is None:
        return []
    latest = table.version()
    oldest_kept = None
    if isinstance(doc, TableMetadata) and doc.versions:
        oldest_kept = min(v.version for v in doc.versions)
    last_vacuum = None
    if isinstance(doc, StreamMetadata) or doc is None:  # needs the last vacuum: the whole log
        commits = feed.history(table)
        last_vacuum = max((c.timestamp_ms for c in commits if c.operation.startswith("VACUUM")),
                          default=None)
        commits = sorted(commits, key=lambda c: c.version, reverse=True)[:limit]
    else:
        commits = feed.history(table, limit)
    entries = []
    for c in commits:
        if oldest_kept is not None:
            readable = c.version >= oldest_kept
        else:
            readable = last_vacuum is None or \
                c.timestamp_ms >= last_vacuum - delta.STREAM_KEEP_S * 1000
        operation = c.operation.lower()
        if c.operation == "WRITE":
            operation = _DELTA_OPERATIONS.get(c.mode or "", "write")
        entries.append(HistoryEntry(
            version=c.version,
            time=iso_utc(dt.datetime.fromtimestamp(c.timestamp_ms / 1000, dt.UTC)),
            operation=operation, rows=c.rows, bytes=c.bytes, files=c.files_added,
            run_id=c.run_id, current=c.version == latest, readable=readable))
    return sorted(entries, key=lambda h: h.version or 0, reverse=True)


def _succeeded(doc: FeedMetadata) -> list[ExportRecord]:
    return [e for e in doc.exports if e.status == "success"]


def _stream(doc: StreamMetadata) -> list[HistoryEntry]:
    # A run's files are the listed ones stamped with its commit time (or, written before
    # `added` existed, named with its start): none left means retention (or a backfill)
    # removed them all, and --as-of can no longer show that run's rows.
    stamps = {(f.added, None if f.added else layout.run_start_of(f.name))
              for _, f in listed_files(doc)}
    entries = [
        HistoryEntry(
            version=None, time=e.finished,
            operation="backfill" if e.run_id.startswith(BACKFILL_PREFIX) else "append",
            rows=e.records, bytes=e.size_bytes, files=e.files, run_id=e.run_id,
            readable=not e.files or bool(
                {(e.finished, None), (None, parse_iso(e.started))} & stamps),
        )
        for e in _succeeded(doc)
    ]
    return sorted(entries, key=lambda h: parse_iso(h.time), reverse=True)


def version_time(doc: TableMetadata, version: Version) -> dt.datetime:
    """When ``version`` was committed: its run's ``finished`` while ``exports`` still holds
    the run, else ``created`` (the run's start, a little earlier)."""
    record = _runs_by_version(doc).get(version.version)
    return parse_iso(record.finished if record is not None else version.created)


def _runs_by_version(doc: TableMetadata) -> dict[int, ExportRecord]:
    return {e.version: e for e in _succeeded(doc) if e.version is not None}


def _table(doc: TableMetadata) -> list[HistoryEntry]:
    runs = _runs_by_version(doc)
    entries = []
    for v in doc.versions:
        run = runs.get(v.version)
        entries.append(HistoryEntry(
            version=v.version, time=run.finished if run is not None else v.created,
            operation="overwrite", rows=v.records, bytes=v.size_bytes, files=len(v.files),
            run_id=run.run_id if run is not None else None,
            current=v.version == doc.current_version,
        ))
    kept = {v.version for v in doc.versions}
    for number, run in runs.items():
        if number not in kept:
            entries.append(HistoryEntry(
                version=number, time=run.finished, operation="overwrite", rows=run.records,
                bytes=run.size_bytes, files=run.files, run_id=run.run_id, readable=False,
            ))
    return sorted(entries, key=lambda h: h.version or 0, reverse=True)
