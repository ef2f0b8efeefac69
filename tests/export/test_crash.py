"""Crash matrix: SIGKILL a real ``lakeexportd export`` at named points, run again, check the lake.

Each case kills the process at one failpoint of the write path (``LAKEEXPORTD_FAILPOINT``),
then runs the same export to completion and checks the invariant: every source row is in the
lake exactly once, with its values and types, and ``_metadata.json`` agrees with the files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from lakecheck import assert_consistent, assert_exactly_once, read_listed
from objectstores import Bucket

from lakeexportd.failpoints import FAILPOINTS
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


def kill_then_rerun(
    sandbox: Sandbox, config: Path, setup: Path, feed: str, point: str, before: int,
    fault: dict[str, object] | None, orphans: str | None,
) -> set[dt.date]:
    """The matrix's sequence: maybe a run killed where it leaves orphans (``orphans``), the
    ``before`` setup runs (``setup`` keeps 30 days, so later runs have old partitions to
    drop), the run killed at ``point`` (with ``fault`` injected), then the rerun. Returns the
    retention cutoffs the two runs may have used."""
    if orphans is not None:
        killed = export(config, feed, orphans)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    for _ in range(max(before, 0)):
        done = export(setup, feed)
        assert done.returncode == 0, done.stderr
    if fault:
        httpx.post(f"{sandbox.url}/_sandbox/faults", json={**fault, "path": "/query-stream"}).raise_for_status()
    try:
        killed = export(config, feed, point)
    finally:
        httpx.delete(f"{sandbox.url}/_sandbox/faults").raise_for_status()
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached:\n{killed.stderr}"
    cutoffs = {layout.retention_cutoff(dt.datetime.now(dt.UTC), 3)}
    rerun = export(config, feed)
    cutoffs.add(layout.retention_cutoff(dt.datetime.now(dt.UTC), 3))
    assert rerun.returncode == 0, rerun.stderr
    return cutoffs


def check_lake(sandbox: Sandbox, lake: Path, feed: str, retention_since: set[dt.date],
               storage: Storage = LOCAL) -> None:
    if feed == "users":
        truth = sandbox.arrow("USER_SUMMARY").drop_columns(["ROWTIME"])
        table = read_listed(lake, "table", feed, storage)
        assert table.select(truth.column_names).schema.types == truth.schema.types
        assert table.sort_by("USER_ID").to_pylist() == truth.sort_by("USER_ID").to_pylist()
        assert_consistent(lake, "table", feed, storage)
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
    assert_consistent(lake, "stream", feed, storage)


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
def test_sigkill_on_s3_then_rerun_keeps_every_row_exactly_once(
    sandbox: Sandbox, tmp_path: Path, point: str, s3_bucket: Bucket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The crash matrix on S3 (moto's server): same points where they exist, same invariant."""
    feed, before, fault = OBJECT_MATRIX[point]
    root = f"{s3_bucket.url}/lake"
    options = {**s3_bucket.config, "allow_http": "true"}
    monkeypatch.setenv("LAKE_SECRET", str(options["secret_access_key"]))
    written = {k: v for k, v in options.items() if k != "secret_access_key"}
    # A killed writer's lease blocks its feed for one ttl (then the rerun, waiting up to
    # lock_wait 2s, takes it over): 1s keeps the matrix fast.
    extra = (", lease_ttl: 1s, storage: {" + ", ".join(f"{k}: '{v}'" for k, v in written.items())
             + ", secret_access_key_env: LAKE_SECRET}")
    logs = f"\nlogging: {{dir: '{tmp_path / 'logs'}'}}\n"
    config = write_config(tmp_path / "lakeexportd.yaml", sandbox.url, root, lake_extra=extra)
    config.write_text(config.read_text() + logs)
    setup = write_config(tmp_path / "setup.yaml", sandbox.url, root, retention_days=30,
                         lake_extra=extra)
    setup.write_text(setup.read_text() + logs)
    orphans = OBJECT_ORPHANS[feed] if before == -1 else None  # a run killed after its uploads
    cutoffs = kill_then_rerun(sandbox, config, setup, feed, point, before, fault, orphans)
    lake = open_lake(root, {k: str(v) for k, v in options.items()})
    check_lake(sandbox, Path(lake.root), feed, cutoffs if feed == "tx_ret" else set(),
               lake.storage)
