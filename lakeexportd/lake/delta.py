"""Delta Lake feeds (DESIGN.md section 12): the Delta log is the commit point.

lakeexportd writes a Delta feed's Parquet files with its own sinks (the same bounded-memory,
exact-type writer as Parquet feeds) and commits them with delta-rs
(``DeltaTable.create_write_transaction``). Why not ``write_deltalake``: its streaming writer
peaked at 410-470 MB on this machine for 5M rows and casts types its own way; the sinks stay
flat in N (see README, "Delta Lake feeds").

Exactly once through the log: every commit carries the application transaction
``lakeexportd:<feed>`` with a strictly increasing version. A stream's version is its
watermark (the upper bound of the committed window, epoch ms), so the log alone says where
the next window starts, and checkpoints keep it (they keep ``txn`` actions, not commit info).
A table's version is the scan start (epoch ms), so a slow old snapshot never replaces a newer
one. A run reads the version before it writes and commits with no retries
(``max_commit_retries=0``): if any other commit landed in between, its commit is refused by
the log's put-if-absent, and it publishes nothing. delta-rs itself never checks transaction
versions.

Types: a Delta ``timestamp`` is microseconds, so TIMESTAMP columns (milliseconds in Parquet
feeds) are written as microseconds; Delta has no TIME type and no decimal wider than 38
digits. A TIME column becomes an ISO string (``12:34:56.789000``, which every reader can
cast back; ``_metadata.json`` keeps its ksqlDB type); a DECIMAL wider than 38 digits is
refused with what to do, never rounded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, Field, WriterProperties
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, CommitProperties, RemoveAction, Transaction

from lakeexportd.errors import LakeStateError, SchemaError, StoreUnreachable
from lakeexportd.failpoints import failpoint
from lakeexportd.lake import layout
from lakeexportd.lake.locking import FeedLock, HeldLock
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import (
    FileEntry,
    Offsets,
    Partition,
    StreamMetadata,
    TableMetadata,
    Version,
    WrittenFile,
    iso_utc,
)
from lakeexportd.lake.storage import Storage

Table = DeltaTable
"""A loaded Delta table (delta-rs's ``DeltaTable``), for the modules that hold one."""

APP_PREFIX = "lakeexportd:"
PARTITION_COLUMNS = ("year", "month", "day")
LOG_DIR = "_delta_log"
META_PREFIX = "lakeexportd."
"""Keys lakeexportd adds to each commit's ``commitInfo`` (``lakeexportd.run_id``, ...)."""


def app_id(feed: str) -> str:
    """The application id of ``feed``'s transactions in the Delta log."""
    return f"{APP_PREFIX}{feed}"


_AT, _AFTER, _PARTITIONS, _PARTITION = "#realtime-at", "#after", "#partitions", "#partition-"


def offset_transactions(feed: str, offsets: Offsets | None,
                        watermark: int) -> list[Transaction]:
    """A realtime commit's point as Delta transaction identifiers, in the same commit as its
    files: ``<app>#partition-N`` = ROWOFFSET of partition N's last row, ``<app>#partitions``
    = one more than the highest partition number, ``<app>#after`` = ``after_ms`` + 1 (0:
    none), and ``<app>#realtime-at`` = the watermark this commit sets. A later batch commit
    moves the watermark only, so the offsets then no longer count (``DeltaFeed.offsets``)."""
    if offsets is None:
        return []
    app = app_id(feed)
    after = 0 if offsets.after_ms is None else offsets.after_ms + 1
    return [Transaction(f"{app}{_AT}", watermark), Transaction(f"{app}{_AFTER}", after),
            Transaction(f"{app}{_PARTITIONS}", max(offsets.partitions, default=-1) + 1),
            *(Transaction(f"{app}{_PARTITION}{p}", o)
              for p, o in sorted(offsets.partitions.items()))]


def is_delta(storage: Storage, feed_dir: PurePath) -> bool:
    """Whether the feed folder holds a Delta log (cheap: one listing, no log replay)."""
    return storage.exists(feed_dir / LOG_DIR)


# -- types --------------------------------------------------------------------------------------

def _delta_type(t: pa.DataType, column: str, feed: str) -> pa.DataType:
    """The Arrow type a Delta table stores for ``t``; what Delta cannot hold is refused."""
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_time(t):
        return pa.string()  # "12:34:56.789000": Delta has no time-of-day type
    if pa.types.is_decimal256(t):
        raise SchemaError(
            f"feed {feed!r}: column {column} is a DECIMAL wider than 38 digits, and Delta "
            "Lake's decimals stop at 38. Export it with `format: parquet` (which keeps it "
            "exactly), or narrow the column in ksqlDB")
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(pa.field(t.value_field.name, _delta_type(t.value_type, column, feed)))
    if pa.types.is_map(t):
        return pa.map_(_delta_type(t.key_type, column, feed),
                       _delta_type(t.item_type, column, feed))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _delta_type(f.type, f"{column}.{f.name}", feed),
                                   f.nullable) for f in t])
    return t


def file_schema(schema: pa.Schema, feed: str, *, kind: str) -> pa.Schema:
    """The schema of a Delta feed's data files: the answer's, timestamps in microseconds.

    A stream's partition columns (``year``, ``month``, ``day``) live in the log, not in the
    files; a column of the same name in any case would clash with them (Delta column names
    are case-insensitive)."""
    if kind == "stream":
        clash = [n for n in schema.names if n.lower() in PARTITION_COLUMNS]
        if clash:
            raise SchemaError(
                f"feed {feed!r}: column(s) {clash} clash with the Delta partition columns "
                f"{list(PARTITION_COLUMNS)} (Delta names are case-insensitive). Rename them in "
                "a ksqlDB stream over the source, or use `format: parquet`")
    return pa.schema([pa.field(f.name, _delta_type(f.type, f.name, feed), f.nullable, f.metadata)
                      for f in schema])


def table_schema(files: pa.Schema, *, kind: str) -> pa.Schema:
    """The Delta table's schema: the files' columns, then a stream's partition columns."""
    plain = pa.schema([f.remove_metadata() for f in files])
    if kind != "stream":
        return plain
    return pa.schema([*plain, *(pa.field(name, pa.int32()) for name in PARTITION_COLUMNS)])


def to_file_schema(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` in the Delta file schema (a cast only where a type differs)."""
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    columns = [column if column.type == field.type else pc.cast(column, field.type, safe=True)
               for column, field in zip(batch.columns, schema, strict=True)]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def partition_values(partition: str) -> dict[str, str | None]:
    """``year=2025/month=01/day=05`` -> ``{"year": "2025", "month": "1", "day": "5"}``."""
    day = layout.partition_day(partition)
    return {"year": str(day.year), "month": str(day.month), "day": str(day.day)}


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# -- the table ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Commit:
    """What a Delta commit of lakeexportd says about itself (from the log's commit info)."""

    version: int
    timestamp_ms: int
    operation: str
    rows: int | None
    bytes: int | None
    files_added: int | None
    run_id: str | None
    mode: str | None = None  # a WRITE's save mode: "Append" or "Overwrite"


def _error(doing: str, exc: Exception) -> Exception:
    """delta-rs's ``exc`` as ours: an unreachable store is StoreUnreachable (exit 75)."""
    text = " ".join(str(exc).split())[:600]
    if isinstance(exc, OSError | DeltaError) and any(
            word in text for word in ("Generic", "error sending request", "connection",
                                      "Connection refused", "timed out")):
        return StoreUnreachable(f"{doing}: {text}")
    return LakeStateError(f"{doing}: {text}")


class DeltaFeed:
    """One feed's Delta table, opened through the lake's storage (local or object store)."""

    def __init__(self, storage: Storage, feed_dir: Path, feed: str) -> None:
        self.storage = storage
        self.feed_dir = feed_dir
        self.feed = feed
        self.uri, self.options = storage.table_location(feed_dir)
        self.shown = storage.show(feed_dir)

    def relative(self, path: str) -> str:
        """A file path as the log or vacuum names it (relative to the table or under its URI,
        percent-encoded) as a path relative to the feed's folder."""
        return urllib.parse.unquote(path.removeprefix(self.uri).lstrip("/"))

    def has_log(self) -> bool:
        return is_delta(self.storage, self.feed_dir)

    def load(self, version: int | None = None) -> DeltaTable | None:
        """The table (at ``version``), or None when the feed has no Delta log yet."""
        if not self.has_log():
            return None
        try:
            return DeltaTable(self.uri, version=version, storage_options=self.options or None)
        except TableNotFoundError:
            return None
        except (DeltaError, OSError) as exc:
            raise _error(f"feed {self.feed!r}: cannot read the Delta log at {self.shown}",
                         exc) from None

    def load_as_of(self, moment: dt.datetime) -> DeltaTable:
        """The table at its latest version committed at or before ``moment``, by the commit
        times the log records (those `history` prints). delta-rs's own ``load_as_version``
        goes by the log files' modification times, a few ms after the recorded ones, so a
        moment taken from `history` could give the version before it."""
        table = self.load()
        if table is None:
            raise LakeStateError(f"feed {self.feed!r} has no Delta table at {self.shown}")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        limit_us = (moment - _EPOCH) // dt.timedelta(microseconds=1)
        older = [c.version for c in self.history(table) if c.timestamp_ms * 1000 <= limit_us]
        if not older:
            raise LakeStateError(f"feed {self.feed!r}: no version of {self.shown} at or "
                                 f"before {moment.isoformat()}: `lakeexportd history` lists "
                                 f"the commit times")
        chosen = max(older)
        if chosen == table.version():
            return table
        try:
            table.load_as_version(chosen)
        except (DeltaError, OSError, ValueError) as exc:
            raise LakeStateError(f"feed {self.feed!r}: cannot load version {chosen} of "
                                 f"{self.shown}: {exc}") from None
        return table

    def create(self, schema: pa.Schema, *, kind: str) -> DeltaTable:
        """Create the table (version 0); a writer that created it first wins, we load it."""
        partition_by = list(PARTITION_COLUMNS) if kind == "stream" else None
        try:
            return DeltaTable.create(self.uri, schema=schema, mode="error",
                                     partition_by=partition_by, name=self.feed,
                                     storage_options=self.options or None)
        except (DeltaError, OSError) as exc:
            table = self.load()
            if table is not None:  # another writer created it in the meantime
                return table
            raise _error(f"feed {self.feed!r}: cannot create the Delta table at {self.shown}",
                         exc) from None

    def transaction_version(self, table: DeltaTable) -> int | None:
        return table.transaction_version(app_id(self.feed))

    def add_columns(self, table: DeltaTable, schema: pa.Schema) -> DeltaTable:
        """Add the columns of ``schema`` the table lacks (ksqlDB added them; they are
        nullable), in one metadata commit, and return the reloaded table."""
        have = {name.lower() for name in table.schema().to_arrow().names}
        new = [f for f in schema if f.name.lower() not in have]
        if not new:
            return table
        try:
            table.alter.add_columns([Field.from_arrow(f.with_nullable(True)) for f in new])
        except (DeltaError, OSError) as exc:
            raise _error(f"feed {self.feed!r}: cannot add columns "
                         f"{[f.name for f in new]} to {self.shown}", exc) from None
        reloaded = self.load()
        assert reloaded is not None
        return reloaded

    def commit(
        self,
        table: DeltaTable,
        files: Sequence[WrittenFile],
        *,
        kind: str,
        schema: pa.Schema,
        txn_version: int,
        run_id: str,
        extra: Mapping[str, str] | None = None,
        remove: Sequence[Mapping[str, Any]] = (),
        rowtime_stats: bool = False,
        offsets: Offsets | None = None,
    ) -> int:
        """One commit: ``files`` appended (stream) or replacing everything (table), with the
        feed's transaction at ``txn_version``. Raises ``DeltaCommitRefused`` when another
        commit landed since ``table`` was loaded; returns the new table version."""
        now_ms = int(time.time() * 1000)
        actions: list[AddAction | RemoveAction] = [
            AddAction(
                path=_log_path(f"{f.partition}/{f.name}" if f.partition else f.name),
                size=f.size_bytes,
                partition_values=partition_values(f.partition) if kind == "stream" else {},
                modification_time=now_ms,
                data_change=True,
                stats=_stats(f, rowtime_stats),
            )
            for f in files
        ]
        # A stream's days past retention_days leave the table in the same commit.
        actions += [RemoveAction(path=str(r["path"]), data_change=True, deletion_timestamp=now_ms,
                                 size=int(r["size_bytes"]),
                                 partition_values={p: str(r[f"partition.{p}"])
                                                   for p in PARTITION_COLUMNS})
                    for r in remove]
        metadata = {
            f"{META_PREFIX}run_id": run_id,
            f"{META_PREFIX}rows": str(sum(f.records for f in files)),
            f"{META_PREFIX}bytes": str(sum(f.size_bytes for f in files)),
            f"{META_PREFIX}files": str(len(files)),
            f"{META_PREFIX}files_removed": str(len(remove)),
            **{f"{META_PREFIX}{k}": v for k, v in (extra or {}).items()},
        }
        properties = CommitProperties(
            custom_metadata=metadata, max_commit_retries=0,
            app_transactions=[Transaction(app_id(self.feed), txn_version),
                              *offset_transactions(self.feed, offsets, txn_version)])
        before = table.version()
        failpoint("delta.before_log_commit")
        try:
            table.create_write_transaction(
                actions, "append" if kind == "stream" else "overwrite", schema,
                partition_by=list(PARTITION_COLUMNS) if kind == "stream" else None,
                commit_properties=properties)
        except CommitFailedError as exc:
            raise DeltaCommitRefused(
                f"feed {self.feed!r}: another commit reached {self.shown} after this run read "
                f"version {before} ({' '.join(str(exc).split())[:200]}); nothing of this run "
                "was published, and the next run exports its rows") from None
        except (DeltaError, OSError) as exc:
            raise _error(f"feed {self.feed!r}: the Delta commit to {self.shown} failed", exc) \
                from None
        failpoint("delta.after_log_commit")
        return before + 1

    # -- reading the log ----------------------------------------------------------------------

    def offsets(self, table: DeltaTable) -> Offsets | None:
        """A realtime feed's committed point, or None when the last commit that moved the
        watermark was not a realtime one (a batch run's, or none): see
        ``offset_transactions``."""
        feed = app_id(self.feed)
        watermark = table.transaction_version(feed)
        if watermark is None or table.transaction_version(f"{feed}{_AT}") != watermark:
            return None
        count = table.transaction_version(f"{feed}{_PARTITIONS}") or 0
        after = table.transaction_version(f"{feed}{_AFTER}") or 0
        return Offsets({p: v for p in range(count)
                        if (v := table.transaction_version(f"{feed}{_PARTITION}{p}")) is not None},
                       after - 1 if after else None)

    def history(self, table: DeltaTable, limit: int | None = None) -> list[Commit]:
        try:
            raw = table.history(limit)
        except (DeltaError, OSError) as exc:
            raise _error(f"feed {self.feed!r}: cannot read the history of {self.shown}",
                         exc) from None
        return [_commit_of(entry) for entry in raw]

    def active_files(self, table: DeltaTable) -> pa.Table:
        """The files of ``table``'s version: path, size_bytes, num_records, partition.*"""
        return pa.table(table.get_add_actions(flatten=True))


class DeltaCommitRefused(LakeStateError):
    """Another commit reached the Delta log first; this run published nothing."""


def _stats(f: WrittenFile, rowtime: bool) -> str:
    """The add action's statistics: the row count, and where the file's event time is its
    ROWTIME column (a BIGINT of epoch ms) that column's min and max, which the sink measured,
    so readers skip files outside a ROWTIME range."""
    stats: dict[str, Any] = {"numRecords": f.records}
    if rowtime and f.min_event_ms is not None and f.max_event_ms is not None:
        stats["minValues"] = {"ROWTIME": f.min_event_ms}
        stats["maxValues"] = {"ROWTIME": f.max_event_ms}
    return json.dumps(stats)


def _log_path(relative: str) -> str:
    """A path as the Delta log writes it: relative, percent-encoded."""
    return urllib.parse.quote(relative, safe="/=")


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _commit_of(entry: Mapping[str, Any]) -> Commit:
    metrics = entry.get("operationMetrics") or {}
    rows = _int(entry.get(f"{META_PREFIX}rows"))
    size = _int(entry.get(f"{META_PREFIX}bytes"))
    added = _int(entry.get(f"{META_PREFIX}files"))
    if rows is None:
        rows = _int(metrics.get("num_added_rows") or metrics.get("numOutputRows"))
    if added is None:
        added = _int(metrics.get("numFilesAdded") or metrics.get("num_added_files"))
    if size is None and metrics.get("filesAdded") is not None:
        size = _total_size(metrics.get("filesAdded"))
    return Commit(
        version=int(entry["version"]),
        timestamp_ms=int(entry.get("timestamp") or 0),
        operation=str(entry.get("operation") or "?"),
        rows=rows, bytes=size, files_added=added,
        run_id=entry.get(f"{META_PREFIX}run_id"),
        mode=(entry.get("operationParameters") or {}).get("mode"),
    )


# -- the _metadata.json summary -----------------------------------------------------------------

@dataclass(frozen=True)
class LoggedFile:
    """One file of a table version, as its log lists it."""

    path: str  # relative to the feed's folder, decoded
    partition: str  # a stream's canonical ``year=YYYY/month=MM/day=DD``; "" for a table
    records: int
    size_bytes: int


def logged_files(delta: DeltaFeed, table: DeltaTable) -> list[LoggedFile]:
    """The files of ``table``'s version, in path order."""
    files = delta.active_files(table)
    rows = files.select([c for c in files.column_names if c in (
        "path", "size_bytes", "num_records", *(f"partition.{p}" for p in PARTITION_COLUMNS))])
    return [LoggedFile(delta.relative(str(row["path"])),
                       layout.day_partition(day_of(row))
                       if row.get("partition.year") is not None else "",
                       int(row["num_records"] or 0), int(row["size_bytes"]))
            for row in sorted(rows.to_pylist(), key=lambda r: r["path"])]


def _entries(delta: DeltaFeed, table: DeltaTable) -> list[tuple[str, FileEntry]]:
    """(canonical day partition or "", entry) of each active file, in path order."""
    return [(f.partition, FileEntry(f.path.rsplit("/", 1)[-1], f.records, f.size_bytes))
            for f in logged_files(delta, table)]


def stream_summary(delta: DeltaFeed, table: DeltaTable, doc: StreamMetadata) -> StreamMetadata:
    """``doc`` with the files and watermark of ``table``'s version (the log is the truth)."""
    by_day: dict[str, list[FileEntry]] = {}
    for partition, entry in _entries(delta, table):
        by_day.setdefault(partition, []).append(entry)
    partitions = tuple(Partition(path, tuple(files)) for path, files in sorted(by_day.items()))
    return dataclasses.replace(
        doc, partitions=partitions, watermark_ms=delta.transaction_version(table),
        offsets=delta.offsets(table),
        extra={**doc.extra, "format": "delta", "delta_version": table.version()})


def snapshot_commits(commits: Sequence[Commit]) -> list[Commit]:
    """A table feed's snapshots: lakeexportd's own write commits, newest first."""
    return sorted((c for c in commits if c.run_id is not None and c.operation == "WRITE"),
                  key=lambda c: c.version, reverse=True)


def table_summary(delta: DeltaFeed, table: DeltaTable, doc: TableMetadata, *,
                  keep: int) -> TableMetadata:
    """``doc`` with the newest ``keep`` snapshots of the log as its versions."""
    snapshots = snapshot_commits(delta.history(table))[:keep]
    versions = []
    for commit in snapshots:
        at = table if commit.version == table.version() else delta.load(commit.version)
        assert at is not None
        created = dt.datetime.fromtimestamp(commit.timestamp_ms / 1000, dt.UTC)
        versions.append(Version(commit.version, iso_utc(created),
                                tuple(e for _, e in _entries(delta, at))))
    current = snapshots[0].version if snapshots else None
    return dataclasses.replace(
        doc, versions=tuple(sorted(versions, key=lambda v: v.version)), current_version=current,
        last_version=max(doc.last_version, current or 0),
        extra={**doc.extra, "format": "delta", "delta_version": table.version()})


def _ours(path: str) -> bool:
    """A data or snapshot file lakeexportd writes, or its temp file (``.<name>.tmp``)."""
    name = urllib.parse.unquote(path).rsplit("/", 1)[-1]
    if layout.is_temp_name(name):
        name = name[1:-len(".tmp")]
    return layout.is_data_file_name(name) or layout.is_snapshot_file_name(name)


@dataclass(frozen=True)
class Vacuum:
    removed: list[str]  # files no kept version needs (the log's tombstones past retention)
    leftovers: list[str]  # lakeexportd's files no commit ever listed (interrupted runs)
    foreign: list[str]  # untracked files lakeexportd did not write: never deleted


def vacuum(delta: DeltaFeed, table: DeltaTable, *, retention_s: float, dry_run: bool,
           keep_versions: Sequence[int] | None = None) -> Vacuum:
    """Delete what no kept version reads: files removed from the table more than
    ``retention_s`` ago (delta-rs's vacuum), and lakeexportd's own untracked files older than
    that (an interrupted run's). Untracked files of other names are reported, never deleted."""
    hours = math.ceil(max(retention_s, 0.0) / 3600)
    keep = list(keep_versions) if keep_versions else None

    def run(full: bool, dry: bool) -> list[str]:
        try:
            return list(table.vacuum(retention_hours=hours, dry_run=dry,
                                     enforce_retention_duration=False, full=full,
                                     keep_versions=keep))
        except (DeltaError, OSError) as exc:
            raise _error(f"feed {delta.feed!r}: vacuum of {delta.shown} failed", exc) from None

    removed = run(False, True)
    untracked = sorted(set(run(True, True)) - set(removed))
    leftovers = [p for p in untracked if _ours(p)]
    foreign = [p for p in untracked if not _ours(p)]
    if dry_run:
        return Vacuum(removed, leftovers, foreign)
    if removed:
        removed = run(False, False)
    for path in leftovers:
        delta.storage.delete(delta.feed_dir / delta.relative(path))
    return Vacuum(removed, leftovers, foreign)


def day_of(row: Mapping[str, Any]) -> dt.date:
    """The day of an ``active_files`` row of a stream."""
    return dt.date(int(row["partition.year"]), int(row["partition.month"]),
                   int(row["partition.day"]))


def files_before(delta: DeltaFeed, table: DeltaTable, cutoff: dt.date) -> list[dict[str, Any]]:
    """The active files of a stream's days before ``cutoff`` (retention_days)."""
    return [row for row in delta.active_files(table).to_pylist() if day_of(row) < cutoff]


@dataclass(frozen=True)
class DayCompaction:
    day: dt.date
    files_in: int
    bytes_in: int
    files_out: int | None = None  # None: planned only (dry run)
    bytes_out: int | None = None


def days_to_compact(delta: DeltaFeed, table: DeltaTable, before: dt.date,
                    target_size: int) -> list[DayCompaction]:
    """Closed days (before ``before``) with files optimize would merge: at least two under
    half the target size."""
    by_day: dict[dt.date, list[int]] = {}
    for row in delta.active_files(table).to_pylist():
        day = day_of(row)
        if day < before:
            by_day.setdefault(day, []).append(int(row["size_bytes"]))
    return [DayCompaction(day, len(sizes), sum(sizes)) for day, sizes in sorted(by_day.items())
            if sum(1 for s in sizes if s < target_size // 2) >= 2]


def optimize_day(delta: DeltaFeed, table: DeltaTable, day: dt.date,
                 target_size: int) -> DayCompaction:
    """delta-rs's optimize (bin-packing compaction) of one day: one commit that adds the new
    files and removes the old (readers of older versions still find them until vacuum)."""
    filters: list[tuple[str, str, Any]] = [
        ("year", "=", str(day.year)), ("month", "=", str(day.month)), ("day", "=", str(day.day))]
    try:
        metrics = table.optimize.compact(
            partition_filters=filters, target_size=target_size, max_concurrent_tasks=1,
            writer_properties=WriterProperties(compression="SNAPPY"),  # as the lake's own files
            commit_properties=CommitProperties(
                custom_metadata={f"{META_PREFIX}compacted_day": day.isoformat()}))
    except (DeltaError, OSError) as exc:
        raise _error(f"feed {delta.feed!r}: optimize of {day} in {delta.shown} failed",
                     exc) from None
    return DayCompaction(day, int(metrics.get("numFilesRemoved", 0)),
                         _total_size(metrics.get("filesRemoved")),
                         int(metrics.get("numFilesAdded", 0)),
                         _total_size(metrics.get("filesAdded")))


def _total_size(stats: Any) -> int:
    """``totalSize`` of optimize's file statistics (a dict, or its JSON text)."""
    if isinstance(stats, str):
        try:
            stats = json.loads(stats)
        except ValueError:
            return 0
    return int(stats.get("totalSize", 0)) if isinstance(stats, dict) else 0


STREAM_KEEP_S = 7 * 86_400.0
"""A Delta stream keeps files it dropped (compaction, retention) readable this long: time
travel reaches a week back (Delta's own default ``deletedFileRetentionDuration``)."""


@dataclass
class DeltaCompaction:
    """What a Delta compaction did (or, dry, would do): optimize per closed day, then vacuum."""

    feed: str
    dry_run: bool
    days: list[DayCompaction] = field(default_factory=list)
    vacuumed: Vacuum | None = None
    stopped: bool = False
    tiered: list[str] = field(default_factory=list)  # never: Delta feeds have no tiering

    @property
    def files_in(self) -> int:
        return sum(d.files_in for d in self.days)

    @property
    def files_out(self) -> int:
        return sum(d.files_out or 0 for d in self.days)

    @property
    def bytes_in(self) -> int:
        return sum(d.bytes_in for d in self.days)

    @property
    def bytes_out(self) -> int:
        return sum(d.bytes_out or 0 for d in self.days)

    @property
    def expired(self) -> int:
        v = self.vacuumed
        return 0 if v is None else len(v.removed) + len(v.leftovers)


def compact_stream(
    storage: Storage, feed_dir: Path, feed: str, *, before: dt.date, target_size: int,
    orphan_grace: float, lock_wait: float, dir_mode: int, file_mode: int, dry_run: bool,
    cancel: threading.Event | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    held: HeldLock | None = None,
) -> DeltaCompaction:
    """Optimize each closed day of a Delta stream (one commit each, under the feed's lock),
    then vacuum what no version of the last ``STREAM_KEEP_S`` reads, then rewrite the
    summary. Rows never change: optimize rewrites files, the log swaps them in one commit."""
    delta = DeltaFeed(storage, feed_dir, feed)
    result = DeltaCompaction(feed, dry_run)
    table = delta.load()
    if table is None:
        return result
    retention_s = max(STREAM_KEEP_S, orphan_grace)
    planned = days_to_compact(delta, table, before, target_size)
    if dry_run:
        result.days = planned
        result.vacuumed = vacuum(delta, table, retention_s=retention_s, dry_run=True)
        return result
    lock: FeedLock | HeldLock = held if held is not None else FeedLock(
        feed_dir, feed=feed, wait=lock_wait, dir_mode=dir_mode, storage=storage)
    for day in planned:
        if cancel is not None and cancel.is_set():
            result.stopped = True
            break
        with lock:
            lock.check()
            current = delta.load()
            assert current is not None
            done = optimize_day(delta, current, day.day, target_size)
            failpoint("compact.delta_after_optimize")
        result.days.append(done)
        if progress is not None:
            progress(layout.day_partition(day.day), done.files_in, done.bytes_in)
    with lock:
        lock.check()
        current = delta.load()
        assert current is not None
        result.vacuumed = vacuum(delta, current, retention_s=retention_s, dry_run=False)
        store = MetadataStore(storage)
        doc = store.load(feed_dir)
        if isinstance(doc, StreamMetadata):
            store.commit(feed_dir, stream_summary(delta, current, doc), file_mode=file_mode)
    return result
