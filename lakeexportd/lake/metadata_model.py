"""The typed ``_metadata.json`` document (DESIGN.md section 5); ``metadata_codec`` reads and
writes it as JSON.

Totals are properties computed from the listed files, so they can never drift from the list;
the codec writes them and ignores whatever totals a file on disk claims.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lakeexportd.lake import layout

FORMAT_VERSION = 1
KEEP_EXPORTS = 100
_MIB = 1_048_576


def iso_utc(moment: dt.datetime) -> str:
    """``2025-01-15T14:30:00Z`` (whole seconds, UTC)."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def size_mb(size_bytes: int) -> float:
    return round(size_bytes / _MIB, 1)


@dataclass(frozen=True)
class FileEntry:
    """One data file as listed in the metadata."""

    name: str
    records: int
    size_bytes: int
    min_event_ms: int | None = None
    max_event_ms: int | None = None
    tier: str | None = None  # the storage class it was moved to; None: the store's default
    added: str | None = None  # streams: the commit time (ISO UTC) of the run that listed it


def added_time(entry: FileEntry) -> dt.datetime | None:
    """When ``entry`` was committed: its ``added``; for a file listed before ``added``
    existed, the run start its name carries (a little before that run's commit). ``None``
    for a name without one."""
    if entry.added is not None:
        return parse_iso(entry.added)
    return layout.run_start_of(entry.name)


def parse_iso(stamp: str) -> dt.datetime:
    """A timestamp this document writes (``2025-01-15T14:30:00Z``) as an aware datetime."""
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@dataclass(frozen=True)
class WrittenFile:
    """A data file a sink made durable under its final name (``partition`` is relative)."""

    partition: str
    name: str
    records: int
    size_bytes: int
    min_event_ms: int | None = None
    max_event_ms: int | None = None

    @property
    def entry(self) -> FileEntry:
        return FileEntry(
            self.name, self.records, self.size_bytes, self.min_event_ms, self.max_event_ms
        )


@dataclass(frozen=True)
class Retired:
    """A data file a compaction replaced (``path``: ``year=.../data_x.parquet``) at ``since``
    (ISO UTC). No longer listed, it stays on disk until ``lake.orphan_grace`` after ``since``
    so readers that listed it before the swap can finish; cleanup never takes it earlier."""

    path: str
    since: str


MIXED = "mixed"
"""A partition's ``tier`` when its files are in different classes (a late file not moved yet)."""


@dataclass(frozen=True)
class Partition:
    path: str
    files: tuple[FileEntry, ...]

    @property
    def tier(self) -> str | None:
        """The class of all its files (None: the store's default), or ``MIXED``."""
        tiers = {f.tier for f in self.files}
        return tiers.pop() if len(tiers) == 1 else (None if not tiers else MIXED)

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files)

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)


@dataclass(frozen=True)
class Version:
    version: int
    created: str
    files: tuple[FileEntry, ...]

    @property
    def path(self) -> str:
        return layout.version_dir_name(self.version)

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files)

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)


@dataclass(frozen=True)
class SchemaColumn:
    name: str
    ksql_type: str
    arrow_type: str


@dataclass(frozen=True)
class SchemaChange:
    changed: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    retyped: tuple[str, ...] = ()


@dataclass(frozen=True)
class Window:
    from_ms: int | None
    to_ms: int


@dataclass(frozen=True)
class ExportRecord:
    """One run in the bounded ``exports`` history, failed runs included."""

    run_id: str
    started: str
    finished: str
    records: int
    status: str  # "success" | "failed"
    window: Window | None = None
    error: str | None = None
    files: int | None = None
    size_bytes: int | None = None
    version: int | None = None


@dataclass(frozen=True)
class Offsets:
    """Where a realtime feed's push query resumes: per Kafka partition the ROWOFFSET of the
    last row the lake holds, and the ROWTIME every row must be after (the watermark the feed
    had when it switched from batch mode or started ``now``; None: from the first row)."""

    partitions: Mapping[int, int]
    after_ms: int | None = None


@dataclass(frozen=True)
class _Common:
    feed: str
    source: str
    last_export: str | None = None
    last_status: str | None = None
    schema: tuple[SchemaColumn, ...] = ()
    schema_history: tuple[SchemaChange, ...] = ()
    exports: tuple[ExportRecord, ...] = ()
    # Keys other modules add later survive a load/commit round trip untouched.
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamMetadata(_Common):
    kind: ClassVar[layout.Kind] = "stream"
    mode: ClassVar[str] = "append"
    partitions: tuple[Partition, ...] = ()
    watermark_ms: int | None = None
    retired: tuple[Retired, ...] = ()  # compaction inputs kept for readers in flight
    # A realtime feed's committed point (DESIGN 14). None for a batch feed: its watermark
    # alone says where it is (a batch run clears it, so a later switch to realtime starts
    # after its watermark).
    offsets: Offsets | None = None

    @property
    def total_records(self) -> int:
        return sum(p.records for p in self.partitions)

    @property
    def total_size_bytes(self) -> int:
        return sum(p.size_bytes for p in self.partitions)

    def bytes_per_tier(self) -> dict[str | None, int]:
        """Listed bytes by storage class (None: the store's default), from the files."""
        out: dict[str | None, int] = {}
        for partition in self.partitions:
            for f in partition.files:
                out[f.tier] = out.get(f.tier, 0) + f.size_bytes
        return out


@dataclass(frozen=True)
class TableMetadata(_Common):
    kind: ClassVar[layout.Kind] = "table"
    mode: ClassVar[str] = "overwrite"
    versions: tuple[Version, ...] = ()
    current_version: int | None = None
    last_version: int = 0

    @property
    def current(self) -> Version | None:
        return next((v for v in self.versions if v.version == self.current_version), None)

    @property
    def total_records(self) -> int:
        current = self.current
        return current.records if current else 0

    @property
    def total_size_bytes(self) -> int:
        current = self.current
        return current.size_bytes if current else 0


FeedMetadata = StreamMetadata | TableMetadata


def listed_files(doc: FeedMetadata) -> list[tuple[str, FileEntry]]:
    """(relative directory, entry) of every file the document lists."""
    if isinstance(doc, StreamMetadata):
        return [(p.path, f) for p in doc.partitions for f in p.files]
    return [(v.path, f) for v in doc.versions for f in v.files]


def listed_paths(doc: FeedMetadata | None) -> set[str]:
    """``directory/name`` of every file the document lists (none without a document)."""
    return {f"{d}/{f.name}" for d, f in listed_files(doc)} if doc is not None else set()


def current_file_count(doc: FeedMetadata) -> int:
    """The files a reader of the feed's current state reads (a table: its current version),
    counted as ``total_size_bytes`` is summed."""
    if isinstance(doc, StreamMetadata):
        return sum(len(p.files) for p in doc.partitions)
    current = doc.current
    return len(current.files) if current else 0


def kept_paths(doc: FeedMetadata | None) -> set[str]:
    """What cleanup must keep: the listed files and the retired ones still in their grace
    (they leave the document, and then the disk, together: ``metadata_update.expire_retired``)."""
    retired = {r.path for r in doc.retired} if isinstance(doc, StreamMetadata) else set()
    return listed_paths(doc) | retired
