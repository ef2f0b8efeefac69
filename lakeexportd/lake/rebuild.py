"""Rebuild a lost ``_metadata.json`` from the feed's Parquet files (``repair --rebuild``).

Pure reading: the document is built from what is on disk (names, partitions and version
folders, Parquet footers for row counts, the Arrow schema with each column's ``ksql_type``,
ROWTIME statistics for the watermark) and returned with a summary; the caller shows it and
commits it only when the operator agrees.

A stream's watermark becomes the largest ROWTIME found in its files. No row is exported twice
from there: every row at or below it that existed at export time is in the files. Rows of a
window whose run died before its commit are not in the files' names yet (they are temp files,
reported as a warning) and are exported again only if they lie above the new watermark.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lakeexportd.errors import LakeStateError, SchemaError
from lakeexportd.lake import layout
from lakeexportd.lake.metadata_model import (
    FeedMetadata,
    FileEntry,
    Partition,
    SchemaColumn,
    StreamMetadata,
    TableMetadata,
    Version,
    iso_utc,
)
from lakeexportd.lake.metadata_update import columns_of
from lakeexportd.lake.storage import LOCAL, Storage


@dataclass
class Rebuilt:
    """A rebuilt document and what the operator should know before it is written."""

    doc: FeedMetadata
    files: int
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Schema:
    columns: dict[str, SchemaColumn] = field(default_factory=dict)

    def add(self, schema: pa.Schema, path: Path) -> None:
        try:
            columns = columns_of(schema, feed=path.name)
        except SchemaError as exc:
            raise LakeStateError(
                f"{path} was not written by lakeexportd ({exc}); move it out of the feed "
                "folder and rebuild again"
            ) from exc
        for column in columns:
            known = self.columns.setdefault(column.name, column)
            if known.ksql_type != column.ksql_type:
                raise LakeStateError(
                    f"{path}: column {column.name} is {column.ksql_type} here but "
                    f"{known.ksql_type} in earlier files; the folder mixes two schemas"
                )


def _footer(storage: Storage, path: Path, schema: _Schema) -> tuple[pq.FileMetaData, int]:
    try:
        with storage.open_read(path) as source:
            parquet = pq.ParquetFile(source)
            schema.add(parquet.schema_arrow, path)
            return parquet.metadata, storage.size(path)
    except (OSError, pa.ArrowException) as exc:
        raise LakeStateError(
            f"{path} is not a readable Parquet file ({exc}); move it out of the feed folder "
            "(its rows are then missing from the lake) and rebuild again"
        ) from exc


def _column_range(meta: pq.FileMetaData, column: str) -> tuple[int | None, int | None]:
    """Min and max of an integer or timestamp column from the row-group statistics."""
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    if column not in names:
        return None, None
    index = names.index(column)
    low: int | None = None
    high: int | None = None
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(index).statistics
        if stats is None or not stats.has_min_max:
            return None, None
        lo, hi = stats.min, stats.max
        if isinstance(lo, dt.datetime):
            lo, hi = _ms(lo), _ms(hi)
        low = lo if low is None else min(low, lo)
        high = hi if high is None else max(high, hi)
    return low, high


def _compacted_from(meta: pq.FileMetaData) -> set[str]:
    """The names a compacted file replaced (``lake.compaction.COMPACTED_FROM``), else none."""
    raw = (meta.metadata or {}).get(b"lakeexportd.compacted_from")
    if raw is None:
        return set()
    try:
        names = json.loads(raw)
    except ValueError:
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def _ms(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def _created(name: str) -> str | None:
    start = layout.run_start_of(name)
    return None if start is None else iso_utc(start)


def _subdirs(storage: Storage, directory: Path, prefix: str) -> list[Path]:
    return [Path(e.path) for e in storage.list_dir(directory)
            if e.is_dir and e.name.startswith(prefix)]


def _walk_partitions(
    storage: Storage, feed_dir: Path
) -> list[tuple[str, list[str], list[str]]]:
    """(partition path, data file names, temp names) for every day folder, in order."""
    out = []
    days = [day for year in _subdirs(storage, feed_dir, "year=")
            for month in _subdirs(storage, year, "month=")
            for day in _subdirs(storage, month, "day=")]
    for day in sorted(days):
        rel = day.relative_to(feed_dir).as_posix()
        try:
            layout.partition_day(rel)  # what _metadata.json accepts as a partition path
        except ValueError:
            continue
        names = [e.name for e in storage.list_dir(day)]
        out.append(
            (
                rel,
                [n for n in names if layout.is_data_file_name(n)],
                [n for n in names if layout.is_temp_name(n)],
            )
        )
    return out


def rebuild_stream(
    feed_dir: Path, *, feed: str, source: str, event_time: str = "ROWTIME",
    storage: Storage = LOCAL,
) -> Rebuilt:
    """The stream document the files in ``feed_dir`` imply."""
    schema = _Schema()
    partitions: list[Partition] = []
    warnings: list[str] = []
    watermark: int | None = None
    count = 0
    for rel, names, temps in _walk_partitions(storage, feed_dir):
        if temps:
            warnings.append(
                f"{rel} holds {len(temps)} temp file(s) of a run that never committed; they "
                "stay out of the document (repair removes them once it is written)"
            )
        files = []
        replaced: set[str] = set()
        for name in names:
            path = feed_dir / rel / name
            meta, size = _footer(storage, path, schema)
            replaced |= _compacted_from(meta)
            _, high = _column_range(meta, "ROWTIME")
            if high is None:
                raise LakeStateError(
                    f"{path} has no ROWTIME statistics, so the watermark cannot be rebuilt "
                    "from it; restore _metadata.json from a backup instead"
                )
            watermark = high if watermark is None else max(watermark, high)
            low_ev, high_ev = _column_range(meta, event_time)
            files.append(FileEntry(name, meta.num_rows, size, low_ev, high_ev))
            count += 1
        if replaced & set(names):
            # Inputs of a compaction still in their grace: their rows are in the compacted file.
            warnings.append(f"{rel}: {len(replaced & set(names))} file(s) a compaction replaced "
                            "stay out of the document (repair removes them once it is written)")
            files = [f for f in files if f.name not in replaced]
            count -= len(replaced & set(names))
        if files:
            partitions.append(Partition(rel, tuple(files)))
    stamps = [s for p in partitions for f in p.files if (s := _created(f.name)) is not None]
    doc = StreamMetadata(
        feed=feed,
        source=source,
        last_export=max(stamps) if stamps else None,
        last_status="success" if stamps else None,
        schema=tuple(schema.columns.values()),
        partitions=tuple(partitions),
        watermark_ms=watermark,
        extra={"rebuilt_from_files": True},
    )
    return Rebuilt(doc, count, warnings)


def rebuild_table(
    feed_dir: Path, *, feed: str, source: str, storage: Storage = LOCAL
) -> Rebuilt:
    """The table document the version folders in ``feed_dir`` imply (the newest is current)."""
    schema = _Schema()
    versions: list[Version] = []
    warnings: list[str] = []
    count = 0
    numbered = sorted(
        (n, e.name) for e in storage.list_dir(feed_dir)
        if (n := layout.version_number(e.name)) is not None and e.is_dir
    )
    for number, name in numbered:
        files = []
        created: list[str] = []
        for file_name in [e.name for e in storage.list_dir(feed_dir / name)]:
            if layout.is_temp_name(file_name):
                warnings.append(f"{name} holds temp file {file_name} (removed by repair later)")
            if not layout.is_snapshot_file_name(file_name):
                continue
            meta, size = _footer(storage, feed_dir / name / file_name, schema)
            files.append(FileEntry(file_name, meta.num_rows, size))
            if (stamp := _created(file_name)) is not None:
                created.append(stamp)
            count += 1
        if not files:
            warnings.append(f"{name} holds no snapshot file: left out of the document")
            continue
        versions.append(Version(number, min(created) if created else "", tuple(files)))
    current = versions[-1].version if versions else None
    doc = TableMetadata(
        feed=feed,
        source=source,
        last_export=versions[-1].created if versions else None,
        last_status="success" if versions else None,
        schema=tuple(schema.columns.values()),
        versions=tuple(versions),
        current_version=current,
        last_version=numbered[-1][0] if numbered else 0,
        extra={"rebuilt_from_files": True},
    )
    return Rebuilt(doc, count, warnings)


def describe(rebuilt: Rebuilt) -> list[str]:
    """What the operator is shown before the document is written."""
    doc = rebuilt.doc
    lines = [
        f"feed {doc.feed} ({doc.kind}, source {doc.source}): {rebuilt.files} data file(s), "
        f"{doc.total_records} rows, {doc.total_size_bytes} bytes",
        "schema: " + ", ".join(f"{c.name} {c.ksql_type}" for c in doc.schema),
    ]
    if isinstance(doc, StreamMetadata):
        mark = doc.watermark_ms
        when = (
            f"{mark} ({iso_utc(dt.datetime.fromtimestamp(mark / 1000, dt.UTC))})"
            if mark is not None else "none (the next run starts from the feed's start)"
        )
        lines.append(f"partitions: {len(doc.partitions)}; watermark (largest ROWTIME): {when}")
    else:
        numbers = ", ".join(f"v{v.version} ({v.records} rows)" for v in doc.versions)
        lines.append(
            f"versions: {numbers or 'none'}; current: v{doc.current_version}; "
            f"next version: v{doc.last_version + 1}"
        )
    lines.extend(f"warning: {w}" for w in rebuilt.warnings)
    return lines
