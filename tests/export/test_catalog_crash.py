"""The catalogue under kill -9, outage and refusal (issue 14, requirement 3; DESIGN 13).

"kill -9 between the lake commit and the catalog commit leaves a catalog that the next run
brings level, never one that lists a file twice or a file the lake does not hold."

A real ``lakeexportd export`` process with a SQLite catalog is killed with SIGKILL at each
catalog failpoint and at ``export.after_commit`` (lake committed, catalog not synced), for a
stream feed whose killed run also drops day partitions (``retention_days``) and compaction
inputs (compacted before it, ``lake.orphan_grace: 0s`` in the killed run) and for a table feed
whose killed run drops a version (``retention_versions: 2``). ``catalog.after_create`` is the
first run of a feed (the table is created right after its first lake commit). Then the feed
is exported again and the catalog is read with pyiceberg's own ``SqlCatalog`` (never
``LakeCatalog``): its current snapshot lists each file once, exactly the files
``_metadata.json`` lists (read as JSON here), all on disk; its rows are the sandbox's, each
once; and every snapshot it still keeps names only files on disk (time travel never reaches
a missing file). Right after the kill the same holds except being level: a killed run may
leave the catalog behind, never wrong.

The catalog down (its SQLite file's folder replaced by a regular file) delays no export; the
files the run dropped stay until a later run finds the catalog level. A table at the feed's
name that lakeexportd did not make, or whose columns someone changed, is refused (the feed
is behind) and left exactly as it was.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from lakecheck import wire_truth
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from export.test_crash import export, setup_run
from lakeexportd.catalog.iceberg import LakeCatalog
from lakeexportd.config.load import load_config
from lakeexportd.errors import CatalogError
from lakeexportd.lake.compaction import compact_feed
from lakeexportd.lake.configured import lake_of
from lakeexportd.lake.storage import LOCAL
from lakeexportd.sandbox import Sandbox

# The failpoints between a run's lake commit and the end of its catalog sync.
POINTS = ["export.after_commit", "catalog.after_create", "catalog.before_commit",
          "catalog.after_commit"]
FEEDS = {"stream": ("tx", "TRANSACTION_FLATTENED"), "table": ("users", "USER_SUMMARY")}
RETENTION_DAYS = 3


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=14, preload=900, preload_days=6) as sb:
        yield sb


def write_config(path: Path, sandbox: Sandbox, lake: Path, catalog_db: Path, *,
                 retention_days: int = RETENTION_DAYS, grace: str = "1h") -> Path:
    """The feeds with a SQLite catalog; the setup runs keep 30 days and compaction inputs for
    an hour, the killed run and the rerun keep 3 days and no input past its swap."""
    path.write_text(f"""
ksqldb: {{url: "{sandbox.url}", max_retries: 0}}
lake: {{root: "{lake}", orphan_grace: {grace}}}
scheduler: {{lock_wait: 2s}}
catalog: {{type: sql, uri: "sqlite:///{catalog_db}", namespace: lake}}
defaults: {{batch_size: 400, max_rows_per_file: 60, max_open_partitions: 2}}
feeds:
  - {{name: tx, source: TRANSACTION_FLATTENED, kind: stream, settle_delay: 0s,
      retention_days: {retention_days}, description: transactions, owner: data-team}}
  - {{name: users, source: USER_SUMMARY, kind: table, retention_versions: 2}}
""")
    return path


def recent(sandbox: Sandbox, rows: int, lake: Path) -> None:
    """New rows between the stream's watermark and now: the next run (settle_delay 0s) takes
    them (the sandbox's own "now" rows may lie a few seconds ahead: disorder)."""
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    doc = lake / "streams" / FEEDS["stream"][0] / "_metadata.json"
    mark = json.loads(doc.read_text())["watermark"]["rowtime_ms"] if doc.exists() else now - 1000
    sandbox.generate(rows, (mark + 1, max(now, mark + 2)))


# -- the independent reader ------------------------------------------------------------------


def reader(catalog_db: Path) -> SqlCatalog:
    """pyiceberg's own SQL catalog on the file lakeexportd writes: no lakeexportd code (its
    tables are under the catalog name ``lakeexportd``, a column of pyiceberg's tables)."""
    return SqlCatalog("lakeexportd", uri=f"sqlite:///{catalog_db}",
                      warehouse=f"file://{catalog_db.parent}")


def local(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(uri.removeprefix("file://"))


def lake_files(lake: Path, kind: str, feed: str) -> list[Path]:
    """The files ``_metadata.json`` lists (a table: its current version), read as JSON."""
    feed_dir = lake / ("streams" if kind == "stream" else "tables") / feed
    doc = json.loads((feed_dir / "_metadata.json").read_text())
    if kind == "stream":
        return [feed_dir / p["path"] / f["name"] for p in doc["partitions"] for f in p["files"]]
    return [feed_dir / v["path"] / f["name"] for v in doc["versions"]
            if v["version"] == doc["current_version"] for f in v["files"]]


def snapshot_files(table: Table, snapshot_id: int | None = None) -> list[Path]:
    """The data files a reader of that snapshot (default: the current one) opens."""
    return [local(task.file.file_path) for task in table.scan(snapshot_id=snapshot_id).plan_files()]


def assert_never_wrong(catalog_db: Path, feed: str) -> Table | None:
    """What holds at every moment, a killed run included: the current snapshot lists no file
    twice, and no snapshot the table keeps names a file that is not on disk."""
    catalog = reader(catalog_db)
    try:
        if not catalog.table_exists(("lake", feed)):
            return None
        table = catalog.load_table(("lake", feed))
        current = snapshot_files(table)
        assert len(current) == len(set(current)), "a file listed twice"
        for snapshot in table.metadata.snapshots:
            gone = [p for p in snapshot_files(table, snapshot.snapshot_id) if not p.exists()]
            assert not gone, f"snapshot {snapshot.snapshot_id} names missing files: {gone[:3]}"
        return table
    finally:
        catalog.engine.dispose()


def assert_level(sandbox: Sandbox, lake: Path, catalog_db: Path, kind: str,
                 cutoffs: set[dt.date]) -> None:
    """The catalog lists exactly the lake's files, each once, all on disk, and reads as the
    sandbox's rows (a stream's within retention) exactly once."""
    feed, source = FEEDS[kind]
    table = assert_never_wrong(catalog_db, feed)
    assert table is not None, f"no table lake.{feed}"
    current = snapshot_files(table)
    assert set(current) == set(lake_files(lake, kind, feed))
    assert all(path.exists() for path in current)
    rows = table.scan().to_arrow()
    truth = sandbox.arrow(source)
    if kind == "table":
        assert_rows_once(rows, truth.drop_columns(["ROWTIME"]), "USER_ID")
        return
    # the partition columns Iceberg fills from each file's folder: the row's event day (UTC)
    days = [dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date() for ms in rows["ROWTIME"].to_pylist()]
    assert [dt.date(y, m, d) for y, m, d in zip(rows["year"].to_pylist(), rows["month"].to_pylist(),
                                                rows["day"].to_pylist(), strict=True)] == days
    kept = [truth.filter(pc.greater_equal(
        truth["ROWTIME"], int(dt.datetime.combine(cutoff, dt.time(), dt.UTC).timestamp() * 1000)))
        for cutoff in sorted(cutoffs)]
    truth = next((t for t in kept if t.num_rows == rows.num_rows), kept[0])
    assert_rows_once(rows.drop_columns(["year", "month", "day"]), truth, "TRANSACTION_ID")


def assert_rows_once(rows: pa.Table, truth: pa.Table, key: str) -> None:
    """Each source row once, with its values (Iceberg types: timestamps read as us)."""
    ids = rows[key].to_pylist()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} rows read twice"
    assert set(ids) == set(truth[key].to_pylist()), "rows missing or extra"
    rows = rows.select(truth.column_names).sort_by(key)
    truth = wire_truth(truth).sort_by(key)
    for name in truth.column_names:
        expected = truth[name]
        if expected.type != rows.schema.field(name).type:
            expected = expected.cast(rows.schema.field(name).type)
        assert rows[name].to_pylist() == expected.to_pylist(), name


def retention_cutoffs(before: dt.datetime, after: dt.datetime) -> set[dt.date]:
    """The oldest day the runs between ``before`` and ``after`` may have kept (today counts
    as 0 days old)."""
    return {moment.date() - dt.timedelta(days=RETENTION_DAYS) for moment in (before, after)}


# -- the kill matrix -------------------------------------------------------------------------


def prepare(sandbox: Sandbox, setup: Path, kind: str, lake: Path) -> None:
    """Two ordinary runs (a catalog level with the lake). A stream is compacted between them
    (every closed day: its inputs retired, the second run's sync swaps them in the catalog);
    a table gets a new version from changed rows."""
    feed, _ = FEEDS[kind]
    setup_run(setup, feed)
    if kind == "stream":
        config = load_config(setup)
        now = dt.datetime.now(dt.UTC)
        compacted = compact_feed(LOCAL, lake, config.feed(feed), now=now, lock_wait=2,
                                 orphan_grace=3600, before=now.date())
        assert compacted.days, "nothing compacted: the test would not drop retired inputs"  # type: ignore[union-attr]
    recent(sandbox, 30, lake)
    setup_run(setup, feed)
    # A local lake hides compaction inputs at the swap: no snapshot may still name them.
    assert_never_wrong(lake.parent / "catalog" / "catalog.db", feed)
    recent(sandbox, 30, lake)


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("kind", ["stream", "table"])
def test_kill_between_lake_and_catalog_commit_then_rerun_is_level(
    sandbox: Sandbox, tmp_path: Path, kind: str, point: str,
) -> None:
    """Killed at this point, the catalog is behind but never wrong; the next run levels it."""
    feed, _ = FEEDS[kind]
    lake, db = tmp_path / "lake", tmp_path / "catalog" / "catalog.db"
    db.parent.mkdir()
    config = write_config(tmp_path / "lakeexportd.yaml", sandbox, lake, db, grace="0s")
    setup = write_config(tmp_path / "setup.yaml", sandbox, lake, db, retention_days=30)
    if point != "catalog.after_create":  # else the killed run is the feed's first
        prepare(sandbox, setup, kind, lake)
    started = dt.datetime.now(dt.UTC)
    killed = export(config, feed, point)
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached:\n{killed.stderr}"
    assert_never_wrong(db, feed)
    setup_run(config, feed)  # the next run: an ordinary one
    assert_level(sandbox, lake, db, kind, retention_cutoffs(started, dt.datetime.now(dt.UTC)))


# -- the catalog down ------------------------------------------------------------------------


def old_files(lake: Path, feed: str) -> list[Path]:
    """The listed files of the days a 3-day retention drops (the JSON read here)."""
    feed_dir = lake / "streams" / feed
    doc = json.loads((feed_dir / "_metadata.json").read_text())
    cutoff = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=RETENTION_DAYS)
    old = [feed_dir / p["path"] / f["name"] for p in doc["partitions"] for f in p["files"]
           if dt.date(*(int(part.split("=")[1]) for part in p["path"].split("/"))) < cutoff]
    assert old, "no partition old enough for retention to drop"
    return old


def set_up_stream(sandbox: Sandbox, tmp_path: Path,
                  feed: str) -> tuple[Path, Path, Path, list[Path]]:
    """A stream exported with 30 days kept (its SQLite catalog level), configured to keep
    fewer: the lake, the catalog file, the config, and the old files its next run drops."""
    lake, db = tmp_path / "lake", tmp_path / "catalog" / "catalog.db"
    db.parent.mkdir()
    config = write_config(tmp_path / "lakeexportd.yaml", sandbox, lake, db)
    setup_run(write_config(tmp_path / "setup.yaml", sandbox, lake, db, retention_days=30), feed)
    return lake, db, config, old_files(lake, feed)


def log_lines(run: subprocess.CompletedProcess[str], event: str) -> list[str]:
    return [line for line in (run.stdout + run.stderr).splitlines() if event in line]


def test_catalog_down_delays_no_export_and_the_next_run_catches_up(
    sandbox: Sandbox, tmp_path: Path,
) -> None:
    """The SQLite catalog's folder replaced by a regular file (nothing can open or create the
    database): the export succeeds, logs catalog.behind for the feed and keeps the files its
    retention dropped (the catalog still lists them); with the folder back the next run
    brings the catalog level and deletes them."""
    feed = FEEDS["stream"][0]
    lake, db, config, dropped = set_up_stream(sandbox, tmp_path, feed)
    away = db.parent.with_name("catalog.away")
    db.parent.rename(away)
    db.parent.write_text("a regular file where the catalog's folder was\n")
    recent(sandbox, 20, lake)
    started = dt.datetime.now(dt.UTC)

    down = export(config, feed)

    assert down.returncode == 0, down.stderr
    behind = log_lines(down, "catalog.behind")
    assert behind and all(f"feed={feed}" in line for line in behind), down.stdout[-2000:]
    assert not set(dropped) & set(lake_files(lake, "stream", feed)), "retention dropped nothing"
    assert all(path.exists() for path in dropped), "deleted while the catalog lists them"
    db.parent.unlink()
    away.rename(db.parent)
    assert_never_wrong(db, feed)  # behind (it lists the dropped days), every file on disk

    again = export(config, feed)

    assert again.returncode == 0, again.stderr
    assert not log_lines(again, "catalog.behind"), again.stdout[-2000:]
    assert not any(path.exists() for path in dropped), "deferred deletes never done"
    assert_level(sandbox, lake, db, "stream", retention_cutoffs(started, dt.datetime.now(dt.UTC)))


# -- a catalog that refuses ------------------------------------------------------------------


def test_a_foreign_table_at_the_feeds_name_is_refused_and_left_untouched(
    sandbox: Sandbox, tmp_path: Path,
) -> None:
    """Someone's own table at lake.tx (no lakeexportd.feed property, its own location): the
    export succeeds, the feed is behind with a message that names the table, and the table
    keeps its metadata, snapshot and data exactly; ``drop`` refuses it too."""
    feed = FEEDS["stream"][0]
    lake, db = tmp_path / "lake", tmp_path / "catalog" / "catalog.db"
    db.parent.mkdir()
    config = write_config(tmp_path / "lakeexportd.yaml", sandbox, lake, db)
    catalog = reader(db)
    try:
        catalog.create_namespace("lake")
        theirs = catalog.create_table(("lake", feed), schema=pa.schema([("id", pa.int64())]),
                                      location=f"file://{tmp_path / 'theirs'}")
        theirs.append(pa.table({"id": pa.array([1, 2, 3], pa.int64())}))
        before = catalog.load_table(("lake", feed)).metadata_location
    finally:
        catalog.engine.dispose()

    run = export(config, feed)

    assert run.returncode == 0, run.stderr
    behind = log_lines(run, "catalog.behind")
    assert behind and "was not made by lakeexportd" in behind[0] and "lake.tx" in behind[0]
    catalog = reader(db)
    try:
        table = catalog.load_table(("lake", feed))
        assert table.metadata_location == before
        assert table.scan().to_arrow()["id"].to_pylist() == [1, 2, 3]
    finally:
        catalog.engine.dispose()
    assert lake_files(lake, "stream", feed), "the export itself wrote nothing"
    settings = load_config(config)
    assert settings.catalog is not None
    ours = LakeCatalog(settings.catalog, lake_of(settings.lake))
    try:
        with pytest.raises(CatalogError, match="not made by lakeexportd"):
            ours.drop(settings.feed(feed))
    finally:
        ours.close()
    catalog = reader(db)
    try:
        assert catalog.load_table(("lake", feed)).metadata_location == before
    finally:
        catalog.engine.dispose()


def test_a_column_renamed_in_the_catalog_is_refused_until_renamed_back(
    sandbox: Sandbox, tmp_path: Path,
) -> None:
    """lakeexportd's table with a column renamed by someone: a sync would register the lake's
    files under a new column and leave the renamed one null. It commits nothing (the table
    stays as the rename left it, the feed behind, its dropped days kept on disk); renamed
    back, the next run brings it level."""
    feed = FEEDS["stream"][0]
    lake, db, config, dropped = set_up_stream(sandbox, tmp_path, feed)
    catalog = reader(db)
    try:
        table = catalog.load_table(("lake", feed))
        with table.update_schema() as update:
            update.rename_column("AMOUNT", "amount_eur")
        renamed = catalog.load_table(("lake", feed)).metadata_location
    finally:
        catalog.engine.dispose()
    recent(sandbox, 20, lake)
    started = dt.datetime.now(dt.UTC)

    run = export(config, feed)

    assert run.returncode == 0, run.stderr
    behind = log_lines(run, "catalog.behind")
    assert behind and "amount_eur" in behind[0], run.stdout[-2000:]
    assert all(path.exists() for path in dropped)
    catalog = reader(db)
    try:
        assert catalog.load_table(("lake", feed)).metadata_location == renamed
        table = catalog.load_table(("lake", feed))
        with table.update_schema() as update:
            update.rename_column("amount_eur", "AMOUNT")
    finally:
        catalog.engine.dispose()

    assert export(config, feed).returncode == 0
    assert not any(path.exists() for path in dropped)
    assert_level(sandbox, lake, db, "stream", retention_cutoffs(started, dt.datetime.now(dt.UTC)))
