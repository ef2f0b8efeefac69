"""Which snapshots go (``catalog.snapshots.doomed``), on a real pyiceberg table in SQLite."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from lakeexportd.catalog import snapshots


def table_of(tmp_path: Path, commits: int) -> Table:
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path / 'c.db'}",
                         warehouse=f"file://{tmp_path / 'wh'}")
    catalog.create_namespace("n")
    table = catalog.create_table("n.t", schema=pa.schema([pa.field("id", pa.int64())]))
    for i in range(commits):
        table.append(pa.table({"id": pa.array([i], pa.int64())}))
    return table


def test_a_stream_keeps_its_last_runs_and_a_table_keeps_what_it_did_not_remove(
        tmp_path: Path) -> None:
    table = table_of(tmp_path, snapshots.STREAM_SNAPSHOTS_MAX + 1)
    files = {task.file.file_path for task in table.scan().plan_files()}
    newest = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
    doomed = snapshots.doomed(table, files, stream=True)
    assert doomed == {s.snapshot_id for s in newest[:-snapshots.STREAM_SNAPSHOTS_KEPT]}
    # Not past the bound, or a table feed: no snapshot names a removed file, none goes.
    assert snapshots.doomed(table, files, stream=False) == set()
    snapshots.expire(table, doomed)
    assert len(table.metadata.snapshots) == snapshots.STREAM_SNAPSHOTS_KEPT
    assert snapshots.doomed(table, files, stream=True) == set()
    assert table.scan().to_arrow().num_rows == snapshots.STREAM_SNAPSHOTS_MAX + 1
    # Only the expired snapshots' own manifest lists were deleted.
    lists = {Path(s.manifest_list.removeprefix("file://")) for s in table.metadata.snapshots}
    on_disk = {p for p in (tmp_path / "wh").rglob("snap-*.avro")}
    assert on_disk == lists


def test_every_snapshot_before_a_removal_of_a_file_the_lake_no_longer_keeps_goes(
        tmp_path: Path) -> None:
    table = table_of(tmp_path, 3)
    first = next(iter(table.scan().plan_files())).file
    with table.transaction() as tx, tx.update_snapshot().overwrite() as overwrite:
        overwrite.delete_data_file(first)
    table.append(pa.table({"id": pa.array([9], pa.int64())}))
    ordered = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
    remaining = {task.file.file_path for task in table.scan().plan_files()}
    # The removed file still on disk and kept by the lake: every snapshot stays readable.
    assert snapshots.doomed(table, remaining | {first.file_path}, stream=False) == set()
    # The lake no longer keeps it: the three snapshots before the removal name it, and go.
    assert snapshots.doomed(table, remaining, stream=False) == {s.snapshot_id
                                                               for s in ordered[:3]}
