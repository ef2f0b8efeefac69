"""The catalog follows the lake: every Parquet feed an Iceberg table listing exactly the lake's
files, through exports, new days, retention, table versions, compaction and schema changes.

Exports run against the sandbox over real HTTP into a local lake with a SQLite catalog. What the
catalog holds is read with pyiceberg itself (its own catalog, its scan), and compared with the
sandbox's rows and with the ``_metadata.json`` the test reads as JSON: never with LakeCatalog's
own ``state``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from lakecheck import NOW, assert_exactly_once, exporter, feed
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from lakeexportd.catalog.iceberg import LakeCatalog
from lakeexportd.catalog.policy import follow_catalog
from lakeexportd.config.model import CatalogSettings, Feed
from lakeexportd.errors import CatalogError
from lakeexportd.export.exporter import DataLakeExporter
from lakeexportd.lake import compaction
from lakeexportd.lake.configured import ConfiguredLake
from lakeexportd.lake.metadata_model import Window
from lakeexportd.lake.storage import LOCAL
from lakeexportd.sandbox import Sandbox

DAY_MS = 86_400_000


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=11, preload=900, preload_days=4) as sb:
        yield sb


class Lake:
    """A local lake, its SQLite catalog, an exporter that syncs it, and an independent view."""

    def __init__(self, sandbox: Sandbox, root: Path, **settings: Any) -> None:
        self.root = root
        self.db = root.parent / "catalog.db"
        self.settings = CatalogSettings(uri=f"sqlite:///{self.db}", **settings)
        self.catalog = LakeCatalog(self.settings, ConfiguredLake(LOCAL, root, str(root)))
        self.exporter: DataLakeExporter = exporter(sandbox.url, root)
        self.exporter.catalog = self.catalog

    def independent(self) -> Catalog:
        # pyiceberg's SQL catalog keys its rows by the catalog's name: lakeexportd's is
        # "lakeexportd" (README), so a reader opens it under that name.
        return SqlCatalog("lakeexportd", uri=f"sqlite:///{self.db}",
                          warehouse=f"file://{self.root}/_catalog")

    def table(self, name: str, namespace: str = "lake") -> Table:
        return self.independent().load_table((namespace, name))

    def listed(self, kind: str, name: str) -> set[str]:
        """``file://`` URIs of the files ``_metadata.json`` lists (a table: its current version)."""
        folder = self.root / f"{kind}s" / name
        doc = json.loads((folder / "_metadata.json").read_text())
        if kind == "stream":
            pairs = [(p["path"], f["name"]) for p in doc["partitions"] for f in p["files"]]
        else:
            pairs = [(v["path"], f["name"]) for v in doc["versions"]
                     if v["version"] == doc["current_version"] for f in v["files"]]
        return {f"file://{folder / d / n}" for d, n in pairs}


def catalog_files(table: Table, snapshot_id: int | None = None) -> list[str]:
    """The data files a snapshot lists, duplicates kept (so a file listed twice shows)."""
    return [task.file.file_path for task in table.scan(snapshot_id=snapshot_id).plan_files()]


def assert_level(lake: Lake, kind: str, name: str) -> Table:
    table = lake.table(name)
    files = catalog_files(table)
    assert len(files) == len(set(files)), "a file is listed twice"
    assert set(files) == lake.listed(kind, name)
    for snapshot in table.metadata.snapshots:  # time travel never reaches a missing file
        for path in catalog_files(table, snapshot.snapshot_id):
            assert Path(path.removeprefix("file://")).is_file(), (snapshot.snapshot_id, path)
    return table


def test_a_stream_is_a_partitioned_iceberg_table_with_exactly_the_lake_rows(
        sandbox: Sandbox, tmp_path: Path) -> None:
    lake = Lake(sandbox, tmp_path / "lake")
    tx = feed("transactions", "TRANSACTION_STREAM", description="Card payments", owner="payments",
              tags=("finance", "pii"))
    result = lake.exporter.export(tx, NOW)
    assert result.catalogued and result.catalog_behind is None
    table = assert_level(lake, "stream", "transactions")
    rows = table.scan().to_arrow()
    truth = sandbox.arrow("TRANSACTION_STREAM")
    # Iceberg timestamps are microseconds: the files' millisecond values read back as such.
    assert rows.schema.field("TRANSACTION_TIME").type == pa.timestamp("us", tz="UTC")
    assert_exactly_once(rows.select(truth.column_names).cast(truth.schema), truth)
    # The partition columns are not in the files: readers fill them from the partition data.
    day = pc.cast(pc.divide(rows.column("ROWTIME"), DAY_MS), pa.int64())
    dates = [dt.date(1970, 1, 1) + dt.timedelta(days=d) for d in day.to_pylist()]
    assert rows.column("year").to_pylist() == [d.year for d in dates]
    assert rows.column("month").to_pylist() == [d.month for d in dates]
    assert rows.column("day").to_pylist() == [d.day for d in dates]
    assert [f.name for f in table.spec().fields] == ["year", "month", "day"]
    assert str(table.schema().find_field("AMOUNT").field_type) == "decimal(10, 2)"
    assert str(table.schema().find_field("TRANSACTION_TIME").field_type) == "timestamptz"
    props = table.properties
    assert (props["comment"], props["owner"], props["lakeexportd.tags"]) == (
        "Card payments", "payments", "finance,pii")
    assert props["lakeexportd.security"] == "raw"
    assert props["commit.retry.num-retries"] == "0"
    # Iceberg's metadata lives under the lake's _catalog folder, never in the feed's folder.
    assert table.metadata_location.startswith(f"file://{lake.root}/_catalog/lake/transactions/")
    assert not (lake.root / "streams" / "transactions" / "metadata").exists()
    # A day's partition prunes through the catalog.
    first = dates[0]
    only = table.scan(row_filter=f"year = {first.year} and month = {first.month} "
                                 f"and day = {first.day}").to_arrow()
    assert only.num_rows == sum(d == first for d in dates) > 0


def test_new_runs_append_and_retention_removes_with_time_travel_kept_readable(
        sandbox: Sandbox, tmp_path: Path) -> None:
    lake = Lake(sandbox, tmp_path / "lake")
    tx = feed("tx", "TRANSACTION_STREAM", retention_days=2, compaction=None)
    now = dt.datetime.now(dt.UTC)
    lake.exporter.export(tx, now)
    first = assert_level(lake, "stream", "tx")
    first_snapshot = first.current_snapshot()
    assert first_snapshot is not None
    sandbox.generate(50)
    lake.exporter.export(tx, now + dt.timedelta(minutes=5))
    table = assert_level(lake, "stream", "tx")
    assert table.current_snapshot().snapshot_id != first_snapshot.snapshot_id  # type: ignore[union-attr]
    # A day later the oldest kept day leaves the lake and the catalog in the same run.
    sandbox.generate(20)
    lake.exporter.export(tx, now + dt.timedelta(days=1, minutes=5))
    table = assert_level(lake, "stream", "tx")
    cutoff = (now + dt.timedelta(days=1)).date() - dt.timedelta(days=2)
    rows = table.scan().to_arrow()
    days = {dt.date(y, m, d) for y, m, d in zip(*(rows.column(c).to_pylist()
                                                  for c in ("year", "month", "day")))}
    assert min(days) >= cutoff
    # The snapshots before the drop named deleted files: they were expired, not left dangling.
    assert all(s.snapshot_id != first_snapshot.snapshot_id for s in table.metadata.snapshots)


def test_table_versions_become_snapshots_with_time_travel_by_id_and_timestamp(
        sandbox: Sandbox, tmp_path: Path) -> None:
    lake = Lake(sandbox, tmp_path / "lake")
    users = feed("users", "USER_SUMMARY", kind="table", retention_versions=2)
    lake.exporter.export(users, NOW)
    v1_rows = {r["USER_ID"]: r["TRANSACTION_COUNT"] for r in sandbox.table("USER_SUMMARY")}
    v1 = lake.table("users").current_snapshot()
    assert v1 is not None
    sandbox.generate(300)
    lake.exporter.export(users, NOW + dt.timedelta(minutes=1))
    table = assert_level(lake, "table", "users")
    now_rows = {r["USER_ID"]: r["TRANSACTION_COUNT"] for r in sandbox.table("USER_SUMMARY")}
    assert now_rows != v1_rows
    current = table.scan().to_arrow()
    assert dict(zip(current.column("USER_ID").to_pylist(),
                    current.column("TRANSACTION_COUNT").to_pylist())) == now_rows
    then = table.scan(snapshot_id=v1.snapshot_id).to_arrow()
    assert dict(zip(then.column("USER_ID").to_pylist(),
                    then.column("TRANSACTION_COUNT").to_pylist())) == v1_rows
    by_time = table.snapshot_as_of_timestamp(v1.timestamp_ms)
    assert by_time is not None and by_time.snapshot_id == v1.snapshot_id
    versions = [s.summary.additional_properties.get("lakeexportd.version")  # type: ignore[union-attr]
                for s in table.metadata.snapshots]
    assert versions == ["1", "2"]
    # A third version: version 1 leaves the lake (retention 2), its snapshot leaves the catalog.
    lake.exporter.export(users, NOW + dt.timedelta(minutes=2))
    table = assert_level(lake, "table", "users")
    assert [s.summary.additional_properties.get("lakeexportd.version")  # type: ignore[union-attr]
            for s in table.metadata.snapshots] == ["2", "3"]


def test_a_catalog_behind_by_several_versions_replays_each_kept_one(
        sandbox: Sandbox, tmp_path: Path) -> None:
    lake = Lake(sandbox, tmp_path / "lake")
    users = feed("users", "USER_SUMMARY", kind="table", retention_versions=3)
    lake.exporter.export(users, NOW)
    lake.exporter.catalog = None  # three versions the catalog does not follow
    for minute in (1, 2, 3):
        sandbox.generate(100)
        lake.exporter.export(users, NOW + dt.timedelta(minutes=minute))
    result = lake.catalog.sync(users)
    assert result.snapshots == 3  # versions 2, 3, 4, in order (1 fell out of retention)
    table = assert_level(lake, "table", "users")
    assert [s.summary.additional_properties.get("lakeexportd.version")  # type: ignore[union-attr]
            for s in table.metadata.snapshots] == ["2", "3", "4"]
    assert lake.catalog.sync(users).snapshots == 0  # level: nothing to commit


def ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_compaction_swaps_files_in_the_catalog_and_an_added_column_joins_the_schema(
        sandbox: Sandbox, tmp_path: Path) -> None:
    lake = Lake(sandbox, tmp_path / "lake")
    flat = feed("flat", "TRANSACTION_FLATTENED", settle_delay=0)
    day = NOW - dt.timedelta(days=3)
    for hour in range(1, 4):  # three runs into one day: several small files in it
        run = day + dt.timedelta(hours=hour)
        sandbox.generate(30, rowtime_ms=(ms(run) - 3_000_000, ms(run) - 1))
        lake.exporter.export(flat, run)
    before = assert_level(lake, "stream", "flat").scan().to_arrow()
    files_before = len(catalog_files(lake.table("flat")))
    # As the CLI and the daemon call it: the catalog follows each day's swap.
    result = compaction.compact_feed(LOCAL, lake.root, flat, now=NOW, lock_wait=2,
                                     orphan_grace=3600, follow=follow_catalog(lake.catalog, flat))
    assert result.files_in > result.files_out  # type: ignore[union-attr]
    after = assert_level(lake, "stream", "flat").scan().to_arrow()
    assert len(catalog_files(lake.table("flat"))) < files_before
    assert sorted(after.column("TRANSACTION_ID").to_pylist()) == sorted(
        before.column("TRANSACTION_ID").to_pylist())
    lake.exporter.client.ksql("ALTER STREAM TRANSACTION_FLATTENED ADD COLUMN NOTE STRING;")
    sandbox.generate(10, rowtime_ms=(ms(NOW) - 60_000, ms(NOW) - 1))
    lake.exporter.export(flat, NOW)
    table = assert_level(lake, "stream", "flat")
    assert table.schema().find_field("NOTE") is not None
    rows = table.scan().to_arrow()
    assert rows.num_rows == len(sandbox.rows("TRANSACTION_FLATTENED"))
    names = {f.name for f in table.schema().fields}
    mapping = json.loads(table.properties["schema.name-mapping.default"])
    assert {m["names"][0] for m in mapping} == names  # the name mapping follows the schema


def test_a_feed_iceberg_cannot_hold_is_refused_by_name_and_its_export_stands(
        sandbox: Sandbox, tmp_path: Path) -> None:
    lake = Lake(sandbox, tmp_path / "lake")
    wide = feed("wide", "WIDE_DECIMALS")
    result = lake.exporter.export(wide, NOW)
    assert result.rows > 0 and result.catalog_behind is not None
    assert "column HUGE is DECIMAL(76, 20)" in result.catalog_behind
    assert "feed 'wide'" in result.catalog_behind
    with pytest.raises(CatalogError, match="at most 38 digits"):
        lake.catalog.sync(wide)
    assert ("lake",) not in lake.independent().list_namespaces()  # nothing was registered
    # `catalog: false` leaves it out on purpose: no run says it is behind any more.
    quiet = feed("wide", "WIDE_DECIMALS", catalogued=False)
    sandbox.generate(5)
    result = lake.exporter.export(quiet, NOW + dt.timedelta(minutes=1))
    assert result.catalog_behind is None and not result.catalogued


def test_security_namespaces_put_each_level_apart_and_a_level_change_moves_the_table(
        sandbox: Sandbox, tmp_path: Path) -> None:
    lake = Lake(sandbox, tmp_path / "lake", security_namespaces=True)
    raw: Feed = feed("tx", "TRANSACTION_FLATTENED", settle_delay=0)
    lake.exporter.export(raw, NOW)
    assert ("lake_raw", "tx") in lake.independent().list_tables("lake_raw")
    users = feed("users", "USER_SUMMARY", kind="table", security="aggregated")
    lake.exporter.export(users, NOW)
    assert lake.table("users", "lake_aggregated").scan().to_arrow().num_rows > 0
    anonymized = feed("tx", "TRANSACTION_FLATTENED", security="anonymized", settle_delay=0)
    sandbox.generate(10, rowtime_ms=(ms(NOW) + 1, ms(NOW) + 30_000))
    lake.exporter.export(anonymized, NOW + dt.timedelta(minutes=1))
    catalog = lake.independent()
    assert catalog.list_tables("lake_raw") == []
    moved = catalog.load_table(("lake_anonymized", "tx"))
    assert moved.properties["lakeexportd.security"] == "anonymized"
    assert len(moved.metadata.snapshots) == 2  # its history came with it
    assert moved.scan().to_arrow().num_rows == len(sandbox.rows("TRANSACTION_FLATTENED"))


def test_drop_removes_the_table_and_keeps_every_lake_file_and_sync_registers_it_again(
        sandbox: Sandbox, tmp_path: Path) -> None:
    lake = Lake(sandbox, tmp_path / "lake")
    flat = feed("flat", "TRANSACTION_FLATTENED")
    lake.exporter.export(flat, NOW)
    files = sorted(p for p in (lake.root / "streams" / "flat").rglob("*") if p.is_file())
    assert lake.catalog.drop(flat)
    assert lake.independent().list_tables("lake") == []
    assert sorted(p for p in (lake.root / "streams" / "flat").rglob("*") if p.is_file()) == files
    assert not lake.catalog.drop(flat)  # already gone: said, not an error
    assert lake.catalog.sync(flat).created
    assert_level(lake, "stream", "flat")


def test_backfill_and_repair_wait_for_a_catalog_that_is_behind(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """A backfill replaces files: with the catalog down they stay on disk (the catalog still
    lists them) and go once a later run brought it level; a repair deletes nothing then."""
    folder = tmp_path / "cat"
    folder.mkdir()
    settings = CatalogSettings(uri=f"sqlite:///{folder / 'catalog.db'}")
    root = tmp_path / "lake"
    ex = exporter(sandbox.url, root)
    ex.catalog = LakeCatalog(settings, ConfiguredLake(LOCAL, root, str(root)))
    flat = feed("flat", "TRANSACTION_FLATTENED")
    ex.export(flat, NOW)
    feed_dir = root / "streams" / "flat"
    before = {p for p in feed_dir.rglob("data_*.parquet")}
    folder.rename(tmp_path / "cat.away")
    folder.write_text("not a folder: the catalog cannot be opened")
    ex.catalog = LakeCatalog(settings, ConfiguredLake(LOCAL, root, str(root)))  # no pooled link
    lowest = min(r["ROWTIME"] for r in sandbox.rows("TRANSACTION_FLATTENED"))
    result = ex.backfill(flat, Window(lowest - 1, lowest + DAY_MS), NOW, confirm=lambda _: True)
    assert result is not None and result.files > 0
    assert before <= set(feed_dir.rglob("data_*.parquet"))  # replaced, yet kept on disk
    with pytest.raises(CatalogError, match="repair deleted nothing"):
        ex.repair(flat)
    assert before <= set(feed_dir.rglob("data_*.parquet"))
    folder.unlink()
    (tmp_path / "cat.away").rename(folder)
    ex.catalog = LakeCatalog(settings, ConfiguredLake(LOCAL, root, str(root)))
    ex.export(flat, NOW + dt.timedelta(minutes=1))  # catches up, then cleans up
    lake = Lake.__new__(Lake)
    lake.root, lake.db = root, folder / "catalog.db"
    table = assert_level(lake, "stream", "flat")
    assert not before <= set(feed_dir.rglob("data_*.parquet"))  # the replaced ones are gone
    assert table.scan().to_arrow().num_rows == len(sandbox.rows("TRANSACTION_FLATTENED"))
