"""Pure steps from one ``_metadata.json`` document to the next, so the exporter stays small.

Every function takes the previous document and a run's result and returns a new document; the
caller commits it with ``MetadataStore.commit`` and only then deletes what it dropped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import pyarrow as pa

from lakeexportd.errors import LakeStateError, SchemaError
from lakeexportd.lake import layout
from lakeexportd.lake.metadata_model import (
    KEEP_EXPORTS,
    ExportRecord,
    FeedMetadata,
    FileEntry,
    Partition,
    Retired,
    SchemaChange,
    SchemaColumn,
    StreamMetadata,
    TableMetadata,
    Version,
    WrittenFile,
    added_time,
    iso_utc,
)


def new_document(kind: layout.Kind, *, feed: str, source: str) -> FeedMetadata:
    """The document of a feed that has never committed."""
    if kind == "stream":
        return StreamMetadata(feed=feed, source=source)
    return TableMetadata(feed=feed, source=source)


def columns_of(schema: pa.Schema, *, feed: str) -> tuple[SchemaColumn, ...]:
    """The metadata's schema list; each field must carry its ksqlDB type in ``ksql_type``."""
    out = []
    for f in schema:
        ksql = (f.metadata or {}).get(b"ksql_type")
        if ksql is None:
            raise SchemaError(
                f"feed {feed!r}: column {f.name} has no ksql_type in its Arrow field metadata; "
                "schemas must come from ksqlDB's columnTypes (ksql_types.arrow_schema)"
            )
        out.append(SchemaColumn(f.name, ksql.decode(), str(f.type)))
    return tuple(out)


def with_schema(
    doc: FeedMetadata, columns: Sequence[SchemaColumn], now: dt.datetime
) -> FeedMetadata:
    """Record ``columns``; a stream keeps the union (its old files still have old columns)."""
    old = {c.name: c for c in doc.schema}
    new = {c.name: c for c in columns}
    added = tuple(n for n in new if n not in old)
    removed = tuple(n for n in old if n not in new)
    retyped = tuple(n for n in new if n in old and new[n] != old[n])
    if isinstance(doc, StreamMetadata):
        # Same ksqlDB type, new Arrow type: lakeexportd changed how it stores the type (TIME
        # went from time32[ms] to time64[us] so Spark can read it). Every reader combines old
        # and new files of such a column, so it is recorded, not refused.
        restored = tuple(n for n in retyped if new[n].ksql_type == old[n].ksql_type)
        retyped = tuple(n for n in retyped if n not in restored)
        if retyped:
            changes = ", ".join(f"{n}: {old[n].ksql_type} -> {new[n].ksql_type}" for n in retyped)
            raise SchemaError(
                f"feed {doc.feed!r}: the type of {changes} changed in source {doc.source}; "
                "files already in the lake keep the old type, so readers could not combine "
                "them. Export the new schema into a new feed name"
            )
        merged = tuple(new[c.name] if c.name in restored else c for c in doc.schema) + \
            tuple(new[n] for n in added)
        removed = ()  # the union still lists them: older files hold those columns
        retyped = restored
    else:
        merged = tuple(columns)
    if not doc.schema:
        return dataclasses.replace(doc, schema=merged)
    if not (added or removed or retyped):
        return doc
    change = SchemaChange(iso_utc(now), added, removed, retyped)
    return dataclasses.replace(
        doc, schema=merged, schema_history=(*doc.schema_history, change)
    )


def with_export(
    doc: FeedMetadata, record: ExportRecord, *, keep: int = KEEP_EXPORTS
) -> FeedMetadata:
    """Append one run to the bounded history and set ``last_export``/``last_status``."""
    history = (*doc.exports, record)[-keep:]
    return dataclasses.replace(
        doc, exports=history, last_export=record.finished, last_status=record.status
    )


def with_stream_files(
    doc: StreamMetadata, written: Sequence[WrittenFile], *, watermark_ms: int,
    added: str | None = None,
) -> StreamMetadata:
    """List new files under their partitions and move the watermark (one atomic step);
    ``added`` is the commit's time, recorded on each new file (``files --as-of``)."""
    if doc.watermark_ms is not None and watermark_ms < doc.watermark_ms:
        raise LakeStateError(
            f"feed {doc.feed!r}: the new watermark {watermark_ms} is before the committed "
            f"{doc.watermark_ms} (did the clock go back?); refusing to move it backwards"
        )
    files: dict[str, list[FileEntry]] = {p.path: list(p.files) for p in doc.partitions}
    for w in written:
        layout.partition_day(w.partition)
        listed = files.setdefault(w.partition, [])
        if any(f.name == w.name for f in listed):
            raise LakeStateError(f"feed {doc.feed!r}: {w.partition}/{w.name} is already listed")
        listed.append(dataclasses.replace(w.entry, added=added))
    partitions = tuple(Partition(path, tuple(fs)) for path, fs in sorted(files.items()))
    return dataclasses.replace(doc, partitions=partitions, watermark_ms=watermark_ms)


def without_partitions_before(
    doc: StreamMetadata, cutoff: dt.date
) -> tuple[StreamMetadata, tuple[Partition, ...]]:
    """Drop day partitions older than ``cutoff``; returns the document and what it dropped."""
    kept = tuple(p for p in doc.partitions if layout.partition_day(p.path) >= cutoff)
    dropped = tuple(p for p in doc.partitions if layout.partition_day(p.path) < cutoff)
    return dataclasses.replace(doc, partitions=kept), dropped


def with_file_tiers(
    doc: StreamMetadata, partition: str, names: Sequence[str], tier: str
) -> StreamMetadata:
    """Record that the files ``names`` of ``partition`` are now in storage class ``tier``."""
    wanted = set(names)
    partitions = []
    for p in doc.partitions:
        if p.path == partition:
            missing = wanted - {f.name for f in p.files}
            if missing:
                raise LakeStateError(f"feed {doc.feed!r}: {partition}/{sorted(missing)[0]} is "
                                     "not listed; its storage class is not recorded")
            p = Partition(p.path, tuple(dataclasses.replace(f, tier=tier)
                                        if f.name in wanted else f for f in p.files))
        partitions.append(p)
    if partition not in {p.path for p in doc.partitions}:
        raise LakeStateError(f"feed {doc.feed!r}: partition {partition} is not listed")
    return dataclasses.replace(doc, partitions=tuple(partitions))


def with_compacted(
    doc: StreamMetadata, partition: str, inputs: Sequence[str], outputs: Sequence[WrittenFile],
    *, now: dt.datetime,
) -> StreamMetadata:
    """Swap ``inputs`` of ``partition`` for ``outputs`` (where the first input was listed) and
    retire the inputs as of ``now``: they leave the list, not yet the disk."""
    wanted = set(inputs)
    current = next((p for p in doc.partitions if p.path == partition), None)
    listed = {f.name for f in current.files} if current is not None else set()
    if current is None or wanted - listed:
        raise LakeStateError(f"feed {doc.feed!r}: {partition} no longer lists every file "
                             "this compaction read; nothing was swapped")
    new_names = {o.name for o in outputs}
    if new_names & listed or any(o.partition != partition for o in outputs):
        raise LakeStateError(f"feed {doc.feed!r}: a compacted file of {partition} is already "
                             "listed or belongs elsewhere; nothing was swapped")
    # A compacted file counts as committed when its newest input was (`files --as-of`): a
    # past state never shows rows that were not committed yet, at the cost of hiding a day's
    # earlier rows from an --as-of inside that day.
    stamps = [t for f in current.files if f.name in wanted and (t := added_time(f)) is not None]
    added = iso_utc(max(stamps)) if stamps else None
    files: list[FileEntry] = []
    outputs_in = False
    for f in current.files:
        if f.name not in wanted:
            files.append(f)
        elif not outputs_in:
            files.extend(dataclasses.replace(o.entry, added=added) for o in outputs)
            outputs_in = True
    partitions = tuple(Partition(p.path, tuple(files)) if p.path == partition else p
                       for p in doc.partitions)
    retired = tuple(Retired(f"{partition}/{name}", iso_utc(now)) for name in inputs)
    return dataclasses.replace(doc, partitions=partitions, retired=(*doc.retired, *retired))


def expire_retired(
    doc: StreamMetadata, now: dt.datetime, grace: float
) -> tuple[StreamMetadata, tuple[Retired, ...]]:
    """Drop the retired files whose grace is over (or whose partition is gone); returns the
    document and what it dropped, for the caller to delete once the document is committed."""
    if not doc.retired:
        return doc, ()
    listed = {p.path for p in doc.partitions}
    limit = now - dt.timedelta(seconds=grace)

    def over(r: Retired) -> bool:
        since = dt.datetime.strptime(r.since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        return since <= limit or r.path.rpartition("/")[0] not in listed

    expired = tuple(r for r in doc.retired if over(r))
    if not expired:
        return doc, ()
    gone = set(expired)
    kept = tuple(r for r in doc.retired if r not in gone)
    return dataclasses.replace(doc, retired=kept), expired


def next_version(doc: TableMetadata) -> int:
    """Versions are never reused, even when every older one was pruned."""
    return doc.last_version + 1


def with_table_version(
    doc: TableMetadata,
    *,
    version: int,
    files: Sequence[WrittenFile],
    created: dt.datetime,
    retention_versions: int,
) -> tuple[TableMetadata, tuple[Version, ...]]:
    """Make ``version`` current and keep the newest ``retention_versions``; returns the dropped."""
    if version <= doc.last_version:
        raise LakeStateError(
            f"feed {doc.feed!r}: version {version} is not after last_version {doc.last_version}"
        )
    if retention_versions < 1:
        raise ValueError(f"retention_versions must be >= 1, got {retention_versions}")
    entry = Version(version, iso_utc(created), tuple(f.entry for f in files))
    ordered = sorted((*doc.versions, entry), key=lambda v: v.version)
    kept, dropped = ordered[-retention_versions:], ordered[:-retention_versions]
    new = dataclasses.replace(
        doc, versions=tuple(kept), current_version=version, last_version=version
    )
    return new, tuple(dropped)


def after_stream_run(
    doc: StreamMetadata,
    *,
    record: ExportRecord,
    written: Sequence[WrittenFile],
    columns: Sequence[SchemaColumn],
    watermark_ms: int,
    now: dt.datetime,
) -> StreamMetadata:
    """Schema, files, watermark and history of one successful stream run; the new files'
    ``added`` is the run's commit time, ``record.finished``."""
    step = with_schema(doc, columns, now)
    assert isinstance(step, StreamMetadata)
    step = with_stream_files(step, written, watermark_ms=watermark_ms, added=record.finished)
    result = with_export(step, record)
    assert isinstance(result, StreamMetadata)
    return result


def after_table_run(
    doc: TableMetadata,
    *,
    record: ExportRecord,
    version: int,
    files: Sequence[WrittenFile],
    columns: Sequence[SchemaColumn],
    retention_versions: int,
    now: dt.datetime,
) -> tuple[TableMetadata, tuple[Version, ...]]:
    """Schema, new current version, retention and history of one successful table run."""
    step = with_schema(doc, columns, now)
    assert isinstance(step, TableMetadata)
    step, dropped = with_table_version(
        step, version=version, files=files, created=now, retention_versions=retention_versions
    )
    result = with_export(step, record)
    assert isinstance(result, TableMetadata)
    return result, dropped
