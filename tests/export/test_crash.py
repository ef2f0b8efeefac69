"""Crash matrix: SIGKILL a real ``lakeexportd export`` at named points, run again, check the lake.

Each case kills the process at one failpoint of the write path (``LAKEEXPORTD_FAILPOINT``),
then runs the same export to completion and checks the invariant: every source row is in the
lake exactly once, with its values and types, and ``_metadata.json`` agrees with the files.
On object stores the killed run's leftovers stay for ``lake.orphan_grace`` (a paused writer
may still commit what it wrote), so there the files must agree once a repair with the grace
passed has run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from lakecheck import assert_consistent, assert_exactly_once, read_listed
from objectlake import OWN, document, listed, objects, store_config, unlisted
from objectstores import Bucket

from lakeexportd.config.load import load_config
from lakeexportd.config.model import Feed, Schedule
from lakeexportd.export.exporter import DataLakeExporter, exporter_from_config
from lakeexportd.failpoints import FAILPOINTS
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.lake import layout
from lakeexportd.lake.storage import LOCAL, Storage, open_lake
from lakeexportd.sandbox import Sandbox

# name -> (feed, runs before the killed one, fault injected for the killed run)
STREAM_POINTS = {name: ("tx", 0, None) for name in FAILPOINTS if name.startswith(("append.", "export.", "lock.", "metadata."))}
STREAM_POINTS["append.mid_abort"] = ("tx", 0, {"kind": "error_after_rows", "rows": 1500})
STREAM_POINTS["export.after_prune"] = ("tx_ret", 0, None)
TABLE_POINTS = {name: ("users", 2, None) for name in FAILPOINTS if name.startswith(("snapshot.", "prune."))}
TABLE_POINTS["snapshot.mid_abort"] = ("users", 0, {"kind": "error_after_rows", "rows": 300})
# An empty table is the only way to reach this point; the sandbox's tables are never empty here.
del TABLE_POINTS["snapshot.after_empty_file"]
RETENTION_POINTS = {name: ("tx_ret", 1, None) for name in FAILPOINTS if name.startswith("retention.")}
# Orphans must exist for cleanup to have work: an earlier run is killed where it leaves them.
CLEANUP_POINTS = {name: ("tx", -1, None) for name in FAILPOINTS if name.startswith("cleanup.") and "version" not in name and "staging" not in name}
CLEANUP_POINTS["cleanup.after_version_dir"] = ("users", -1, None)
CLEANUP_POINTS["cleanup.after_staging"] = ("users", -1, None)
LEAVE_ORPHANS = {
    "tx": "append.after_all_renames",  # unlisted data files under their final names
    "users": "snapshot.after_publish",  # an unlisted version directory
}
LEAVE_ORPHANS_AT = {
    "cleanup.after_staging": "snapshot.after_staging_fsync",  # a staged, unpublished version
    "cleanup.after_temp": "append.after_file_fsync",  # temp files not yet renamed
}
MATRIX = {**STREAM_POINTS, **TABLE_POINTS, **RETENTION_POINTS, **CLEANUP_POINTS}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=11, preload=2500, preload_days=6) as sb:
        yield sb


def write_config(path: Path, url: str, lake: Path | str, retention_days: int = 3,
                 lake_extra: str = "") -> Path:
    path.write_text(
        f"""
ksqldb: {{url: "{url}", max_retries: 0}}
lake: {{root: "{lake}"{lake_extra}}}
scheduler: {{lock_wait: 2s}}
defaults: {{batch_size: 400, max_rows_per_file: 180, max_open_partitions: 2}}
feeds:
  - {{name: tx, source: TRANSACTION_STREAM, kind: stream}}
  - {{name: tx_ret, source: TRANSACTION_FLATTENED, kind: stream, retention_days: {retention_days}}}
  - {{name: users, source: USER_SUMMARY, kind: table, retention_versions: 2}}
"""
    )
    return path


def export(config: Path, feed: str, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LAKEEXPORTD_FAILPOINT"}
    if failpoint:
        env["LAKEEXPORTD_FAILPOINT"] = failpoint
    return subprocess.run(
        [sys.executable, "-m", "lakeexportd", "export", "-c", str(config), feed],
        env=env, capture_output=True, text=True, timeout=120,
    )


def setup_run(config: Path, feed: str) -> None:
    """One ordinary run that prepares the lake, in this process (no CLI start-up to pay:
    only the killed run and the rerun are the subject, and they run the real CLI)."""
    settings = load_config(config)
    exporter = exporter_from_config(settings)
    try:
        exporter.export(settings.feed(feed), dt.datetime.now(dt.UTC))
    finally:
        exporter.client.close()


def kill_then_rerun(
    sandbox: Sandbox, config: Path, setup: Path, feed: str, point: str, before: int,
    fault: dict[str, object] | None, orphans: str | None, *, killed_config: Path | None = None,
    observe: Callable[[str], None] = lambda moment: None,
) -> set[dt.date]:
    """The matrix's sequence: maybe a run killed where it leaves orphans (``orphans``), the
    ``before`` setup runs (``setup`` keeps 30 days, so later runs have old partitions to
    drop), the run killed at ``point`` (with ``fault`` injected; on ``killed_config`` if
    given), then the rerun. ``observe`` is called with ``"before_kill"`` and
    ``"after_kill"``. Returns the retention cutoffs the two runs may have used."""
    if orphans is not None:
        killed = export(config, feed, orphans)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    for _ in range(max(before, 0)):
        setup_run(setup, feed)
    if fault:
        httpx.post(f"{sandbox.url}/_sandbox/faults", json={**fault, "path": "/query-stream"}).raise_for_status()
    observe("before_kill")
    try:
        killed = export(killed_config or config, feed, point)
    finally:
        httpx.delete(f"{sandbox.url}/_sandbox/faults").raise_for_status()
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached:\n{killed.stderr}"
    observe("after_kill")
    cutoffs = {layout.retention_cutoff(dt.datetime.now(dt.UTC), 3)}
    rerun = export(config, feed)
    cutoffs.add(layout.retention_cutoff(dt.datetime.now(dt.UTC), 3))
    assert rerun.returncode == 0, rerun.stderr
    return cutoffs


def check_lake(sandbox: Sandbox, lake: Path, feed: str, retention_since: set[dt.date],
               storage: Storage = LOCAL) -> None:
    """Every source row listed exactly once, and the metadata matches the files (nothing
    unlisted)."""
    check_rows(sandbox, lake, feed, retention_since, storage)
    assert_consistent(lake, "table" if feed == "users" else "stream", feed, storage)


def check_rows(sandbox: Sandbox, lake: Path, feed: str, retention_since: set[dt.date],
               storage: Storage = LOCAL) -> None:
    """Every source row (within retention) is in the listed files exactly once."""
    if feed == "users":
        truth = sandbox.arrow("USER_SUMMARY").drop_columns(["ROWTIME"])
        table = read_listed(lake, "table", feed, storage)
        assert table.select(truth.column_names).schema.types == truth.schema.types
        assert table.sort_by("USER_ID").to_pylist() == truth.sort_by("USER_ID").to_pylist()
        return
    source = "TRANSACTION_STREAM" if feed == "tx" else "TRANSACTION_FLATTENED"
    truth = sandbox.arrow(source)
    lake_rows = read_listed(lake, "stream", feed, storage)
    if retention_since:
        days = pc.floor_temporal(truth.column("ROWTIME").cast(pa.timestamp("ms", tz="UTC")), unit="day")
        candidates = []
        for cutoff in sorted(retention_since):
            start = dt.datetime.combine(cutoff, dt.time(), dt.UTC)
            candidates.append(truth.filter(pc.greater_equal(days, pa.scalar(start, pa.timestamp("ms", tz="UTC")))))
        truth = next((t for t in candidates if t.num_rows == lake_rows.num_rows), candidates[0])
    assert_exactly_once(lake_rows, truth)


@pytest.mark.parametrize("point", sorted(MATRIX))
def test_sigkill_then_rerun_keeps_every_row_exactly_once(sandbox: Sandbox, tmp_path: Path, point: str) -> None:
    """Killed at this point and run again, the export leaves each row once and metadata true."""
    feed, before, fault = MATRIX[point]
    lake = tmp_path / "lake"
    config = write_config(tmp_path / "lakeexportd.yaml", sandbox.url, lake)
    setup = write_config(tmp_path / "setup.yaml", sandbox.url, lake, retention_days=30)
    orphans = LEAVE_ORPHANS_AT.get(point, LEAVE_ORPHANS[feed]) if before == -1 else None
    cutoffs = kill_then_rerun(sandbox, config, setup, feed, point, before, fault, orphans)
    check_lake(sandbox, lake, feed, cutoffs if feed == "tx_ret" else set())


def test_matrix_covers_enough_distinct_points() -> None:
    """The matrix kills at 50+ distinct points across streams, tables, pruning and commits."""
    assert len(MATRIX) >= 50
    for family in ("append.", "snapshot.", "prune.", "retention.", "metadata.", "cleanup.", "export."):
        assert any(p.startswith(family) for p in MATRIX), family


@pytest.mark.parametrize("point", ["append.after_all_renames", "metadata.after_tmp_fsync",
                                   "metadata.after_replace", "cleanup.after_data_file"])
def test_backfill_killed_then_run_again_keeps_every_row_exactly_once(sandbox: Sandbox, tmp_path: Path, point: str) -> None:
    """A backfill killed before, during or after its commit: the lake stays consistent, and a
    second backfill (or the next run) leaves every source row once."""
    lake = tmp_path / "lake"
    config = write_config(tmp_path / "lakeexportd.yaml", sandbox.url, lake)
    assert export(config, "tx").returncode == 0
    mark = json.loads((lake / "streams/tx/_metadata.json").read_text())["watermark"]["rowtime_ms"]
    rowtimes = sorted(sandbox.arrow("TRANSACTION_STREAM").column("ROWTIME").to_pylist())
    window = ["--from", str(rowtimes[500]), "--to", str(rowtimes[1500]), "--yes"]
    env = {**os.environ, "LAKEEXPORTD_FAILPOINT": point}
    killed = subprocess.run([sys.executable, "-m", "lakeexportd", "backfill", "-c", str(config), "tx", *window],
                            env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached:\n{killed.stderr}"
    assert_exactly_once(read_listed(lake, "stream", "tx"), sandbox.arrow("TRANSACTION_STREAM"))
    again = subprocess.run([sys.executable, "-m", "lakeexportd", "backfill", "-c", str(config), "tx", *window],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert export(config, "tx").returncode == 0
    check_lake(sandbox, lake, "tx", set())
    assert mark <= json.loads((lake / "streams/tx/_metadata.json").read_text())["watermark"]["rowtime_ms"]


# On an object store nothing is renamed, no temp file or staging folder exists and nothing is
# fsynced: those points are never reached there. Every other point of the matrix is.
NOT_ON_OBJECT_STORES = {
    "append.before_rename", "append.after_rename", "append.after_all_renames",
    "append.after_dir_fsync", "append.after_mkdir", "metadata.after_tmp_write",
    "metadata.after_tmp_fsync", "snapshot.before_file_rename", "snapshot.after_file_rename",
    "snapshot.after_staging_dir", "snapshot.after_staging_fsync", "snapshot.before_publish",
    "snapshot.after_publish", "snapshot.mid_abort", "cleanup.after_staging", "cleanup.after_temp",
}
OBJECT_MATRIX = {p: v for p, v in MATRIX.items() if p not in NOT_ON_OBJECT_STORES}
OBJECT_ORPHANS = {"tx": "append.after_finish", "users": "snapshot.after_publish_fsync"}


@pytest.mark.parametrize("point", sorted(OBJECT_MATRIX))
@pytest.mark.parametrize("store", ["s3", "azure"])
def test_sigkill_on_object_store_then_rerun_keeps_every_row_exactly_once(
    sandbox: Sandbox, tmp_path: Path, point: str, store: str, request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The crash matrix on S3 (moto's server) and Azure Blob (Azurite): same points where
    they exist. The rerun leaves every row listed exactly once; within lake.orphan_grace (1h
    here) the killed run's leftovers stay, and every unlisted object is one the killed run
    wrote or one its own commit dropped; a repair with the grace passed removes them all."""
    bucket: Bucket = request.getfixturevalue("s3_bucket" if store == "s3" else "azure_container")
    feed, before, fault = OBJECT_MATRIX[point]
    kind = "table" if feed == "users" else "stream"
    flow, options, secret, root = store_config(bucket)
    monkeypatch.setenv("LAKE_SECRET", secret)
    # A killed writer's lease blocks its feed for one ttl (then the rerun, waiting up to
    # lock_wait 2s, takes it over): 1s keeps the matrix fast.
    extra = f", lease_ttl: 1s, storage: {flow}"
    logs = f"\nlogging: {{dir: '{tmp_path / 'logs'}'}}\n"
    paths = {}
    for name, days, grace in (("lakeexportd", 3, "1h"), ("setup", 30, "1h"), ("swept", 3, "0s")):
        path = write_config(tmp_path / f"{name}.yaml", sandbox.url, root, retention_days=days,
                            lake_extra=f"{extra}, orphan_grace: {grace}")
        path.write_text(path.read_text() + logs)
        paths[name] = path
    seen: dict[str, tuple[set[str], set[str], set[str]]] = {}  # moment -> (all, listed, unlisted)

    def observe(moment: str) -> None:
        keys = set(objects(bucket, "lake", kind, feed)) - set(OWN)
        listing = listed(document(bucket, "lake", kind, feed))
        seen[moment] = (keys, listing, keys - listing)

    orphans = OBJECT_ORPHANS[feed] if before == -1 else None  # a run killed after its uploads
    # Cleanup runs only after a commit, on objects older than the grace: the killed run of
    # a cleanup point sweeps with orphan_grace 0s.
    cutoffs = kill_then_rerun(sandbox, paths["lakeexportd"], paths["setup"], feed, point,
                              before, fault, orphans,
                              killed_config=paths["swept"] if before == -1 else None,
                              observe=observe)
    lake = open_lake(root, options)
    lake_root = Path(lake.root)
    retention = cutoffs if feed == "tx_ret" else set()
    check_rows(sandbox, lake_root, feed, retention, lake.storage)
    rows_listed = listed(document(bucket, "lake", kind, feed))
    all_before, listed_before, unlisted_before = seen["before_kill"]
    all_after, listed_after, unlisted_after = seen["after_kill"]
    if before != -1:
        assert not unlisted_before, "a completed run left unlisted objects"
    own_or_dropped = (all_after - all_before) | (listed_before - listed_after) | unlisted_before
    assert unlisted_after <= own_or_dropped, unlisted_after - own_or_dropped
    # The rerun (grace 1h) removed none of them and left nothing unlisted of its own.
    assert unlisted(bucket, "lake", kind, feed) == unlisted_after
    exporter = DataLakeExporter(KsqlDBClient(CurlTransport(sandbox.url)), lake_root,
                                storage=lake.storage, orphan_grace=0.0, lock_wait=5)
    try:
        swept = exporter.repair(lake_feed(feed, kind))
    finally:
        exporter.client.close()
    assert not swept.kept
    assert unlisted(bucket, "lake", kind, feed) == set()
    # It removed only leftovers: the listed files are the ones whose rows were checked above,
    # and now the metadata and the files agree exactly.
    assert listed(document(bucket, "lake", kind, feed)) == rows_listed
    assert_consistent(lake_root, kind, feed, lake.storage)


def lake_feed(name: str, kind: str) -> Feed:
    source = {"tx": "TRANSACTION_STREAM", "tx_ret": "TRANSACTION_FLATTENED",
              "users": "USER_SUMMARY"}[name]
    return Feed(name=name, source=source, kind=kind, schedule=Schedule(every=60))  # type: ignore[arg-type]
