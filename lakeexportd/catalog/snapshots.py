"""A feed table's snapshots: what lakeexportd writes in their summaries, and which of them go.

Time travel must never reach a missing file: walking back from the newest snapshot, every
snapshot older than the first one that removed a file the lake no longer keeps goes (they all
name that file). A stream commits a snapshot per run, and every commit copies the table's
metadata, all snapshots included, many times over in pyiceberg (a sync took ~13 ms more per
snapshot kept: ``python -m benchmarks.catalog_sync``): past ``STREAM_SNAPSHOTS_MAX`` all but
the newest ``STREAM_SNAPSHOTS_KEPT`` go. A table feed's snapshots are its kept versions. What
only the expired
snapshots used of Iceberg's own metadata (manifest lists, manifests) is deleted with them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Final

import structlog
from pyiceberg.manifest import ManifestEntryStatus, read_manifest_list
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

log = structlog.get_logger(__name__)

RUN_ID: Final = "lakeexportd.run-id"
VERSION: Final = "lakeexportd.version"
WATERMARK: Final = "lakeexportd.watermark-ms"
STREAM_SNAPSHOTS_MAX: Final = 40
STREAM_SNAPSHOTS_KEPT: Final = 20
"""A stream keeps between its last 20 and 40 runs' snapshots for time travel, expired in
batches (a minute schedule: 20 minutes back at least; an hourly one: most of a day). Past
reads of a stream go by ROWTIME; a table feed keeps its versions."""


def doomed(table: Table, kept: set[str], *, stream: bool) -> set[int]:
    """The snapshots to expire, given the URIs of the files the lake keeps under their path."""
    snapshots = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms, reverse=True)
    out: set[int] = set()
    for index, snapshot in enumerate(snapshots):
        if _removed_count(snapshot) and any(
                path not in kept for path in _removed_by(table, snapshot)):
            out = {s.snapshot_id for s in snapshots[index + 1:]}
            break
    if stream and len(snapshots) > STREAM_SNAPSHOTS_MAX:
        out |= {s.snapshot_id for s in snapshots[STREAM_SNAPSHOTS_KEPT:]}
    current = table.current_snapshot()
    if current is not None:
        out.discard(current.snapshot_id)
    return out


def expire(table: Table, ids: set[int]) -> None:
    """Expire ``ids`` (a compare-and-swap commit like any other), then delete the metadata
    only they used (``collect``)."""
    lists = [s.manifest_list for s in table.metadata.snapshots if s.snapshot_id in ids]
    table.maintenance.expire_snapshots().by_ids(sorted(ids)).commit()
    table.refresh()
    collect(table, lists)


def collect(table: Table, manifest_lists: list[str]) -> None:
    """Delete what only the expired snapshots used: their manifest lists (one per
    snapshot, never shared) and the manifests no remaining snapshot lists. Iceberg's
    metadata under the warehouse is lakeexportd's own; the lake's data files are never
    touched here. A failure only leaves garbage: logged, the next expiry tries again."""
    try:
        live = {m.manifest_path for s in table.metadata.snapshots
                for m in s.manifests(table.io)}
        dead: set[str] = set()
        for manifest_list in manifest_lists:
            with contextlib.suppress(FileNotFoundError, OSError):
                dead |= {m.manifest_path for m in read_manifest_list(
                    table.io.new_input(manifest_list))} - live
        for path in [*manifest_lists, *sorted(dead)]:
            table.io.delete(path)
    except Exception as exc:  # noqa: BLE001 - garbage left, nothing lost
        log.warning("catalog.metadata_not_collected", table=table.name(), error=str(exc))


def _removed_by(table: Table, snapshot: Snapshot) -> Iterator[str]:
    for manifest in snapshot.manifests(table.io):
        if manifest.added_snapshot_id != snapshot.snapshot_id:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
            if entry.status == ManifestEntryStatus.DELETED:
                yield entry.data_file.file_path


def version_of(snapshot: Snapshot | None) -> int | None:
    """The table feed version a snapshot is (None: a stream's, or not lakeexportd's)."""
    if snapshot is None or snapshot.summary is None:
        return None
    value = snapshot.summary.additional_properties.get(VERSION)
    return int(value) if value is not None and value.isdigit() else None


def time_of(snapshot: Snapshot | None) -> dt.datetime | None:
    if snapshot is None:
        return None
    return dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.UTC)


def _removed_count(snapshot: Snapshot) -> int:
    summary = snapshot.summary
    value = summary.additional_properties.get("deleted-data-files") if summary else None
    return int(value) if value is not None and value.isdigit() else 0
