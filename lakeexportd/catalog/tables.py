"""A loaded Iceberg table as plain data: what ``catalog show`` prints and ``verify`` compares.

``LakeCatalog.load`` gives pyiceberg's ``Table``; this module reads its metadata (schema,
partitioning, properties, snapshots) and its current snapshot's manifest entries into frozen
dataclasses, so the CLI and the audit never walk pyiceberg objects themselves. Entries are
read *with* duplicates: a file listed twice is exactly what ``verify`` must be able to see,
and ``LakeCatalog.state`` (a dict by path) cannot show it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

from lakeexportd.catalog.iceberg import LakeCatalog
from lakeexportd.catalog.snapshots import VERSION
from lakeexportd.config.model import Feed

NAME_MAPPING: Final = "schema.name-mapping.default"  # long JSON: shown by --json only


@dataclass(frozen=True)
class Column:
    id: int
    name: str
    type: str  # Iceberg's own spelling: ``decimal(10, 2)``, ``timestamptz``, ``list<string>``
    required: bool


@dataclass(frozen=True)
class SnapshotView:
    snapshot_id: int
    time: str  # ISO, UTC, milliseconds
    operation: str | None  # append, overwrite, delete
    added_files: int
    removed_files: int
    records: int | None  # the table's rows in this snapshot
    version: int | None  # tables: the lakeexportd version the snapshot is
    current: bool


@dataclass(frozen=True)
class TableView:
    """What ``catalog show`` prints about one table."""

    location: str
    metadata_location: str
    format_version: int
    columns: tuple[Column, ...]
    partitioning: tuple[str, ...]  # ``year: identity(year)``
    properties: dict[str, str]
    snapshots: tuple[SnapshotView, ...]  # oldest first


@dataclass(frozen=True)
class Entry:
    """One data file of the current snapshot, as its manifest entry says."""

    path: str  # the URI the catalog lists
    records: int
    size_bytes: int


def describe(table: Table) -> TableView:
    schema = table.schema()
    current = table.current_snapshot()
    current_id = current.snapshot_id if current is not None else None
    return TableView(
        location=table.location(),
        metadata_location=table.metadata_location,
        format_version=table.metadata.format_version,
        columns=tuple(Column(f.field_id, f.name, str(f.field_type), f.required)
                      for f in schema.fields),
        partitioning=tuple(
            f"{field.name}: {field.transform}({schema.find_column_name(field.source_id)})"
            for field in table.spec().fields),
        properties=dict(sorted(table.properties.items())),
        snapshots=tuple(_snapshot(s, s.snapshot_id == current_id) for s in
                        sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)),
    )


def entries(table: Table) -> list[Entry]:
    """Every live entry of the current snapshot's manifests, duplicates included."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return []
    return [Entry(e.data_file.file_path, e.data_file.record_count,
                  e.data_file.file_size_in_bytes)
            for manifest in snapshot.manifests(table.io)
            for e in manifest.fetch_manifest_entry(table.io, discard_deleted=True)]


def iso_ms(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + "Z"


def _snapshot(snapshot: Snapshot, current: bool) -> SnapshotView:
    summary = snapshot.summary
    extra = summary.additional_properties if summary is not None else {}

    def number(key: str) -> int | None:
        value = extra.get(key)
        return int(value) if value is not None and value.isdigit() else None

    return SnapshotView(
        snapshot_id=snapshot.snapshot_id, time=iso_ms(snapshot.timestamp_ms),
        operation=summary.operation.value if summary is not None else None,
        added_files=number("added-data-files") or 0,
        removed_files=number("deleted-data-files") or 0,
        records=number("total-records"), version=number(VERSION), current=current)


def feed_uri(catalog: LakeCatalog, feed: Feed) -> str:
    """The URI of the feed's folder as the catalog records its files (``file:///lake/streams/
    tx``, ``s3://bucket/lake/streams/tx``): a listed file's path relative to it is the lake's
    ``directory/name``."""
    return catalog._uri_of(catalog._feed_dir(feed))


def read(catalog: LakeCatalog, feed: Feed) -> tuple[TableView, list[Entry]] | None:
    """The feed's table and its current entries (None: not registered); whatever pyiceberg
    raises on the way is a ``CatalogError`` naming the catalog and the feed."""
    table = catalog.load(feed)
    if table is None:
        return None
    with catalog._errors("reading the table", feed.name):
        return describe(table), entries(table)
