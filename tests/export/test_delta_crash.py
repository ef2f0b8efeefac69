"""Delta feeds hold exactly-once under kill -9 (issue 13, req. 2; DESIGN.md section 12).

A real ``lakeexportd export`` process of a ``format: delta`` feed is killed with SIGKILL at a
named failpoint, then the feed is exported again; the table is then read with delta-rs
(``DeltaTable``), never with lakeexportd, and compared with the sandbox's rows
(tests/deltacheck.py): every row once, with its values and Delta types, the feed's
transaction at the summary's watermark, the summary listing exactly the log's files, every
file the log lists present, and nothing the rerun wrote left unlisted. A stream feed (``tx``,
first data run killed, 5 days of rows over several files per day) and a table feed
(``users``, killed after two snapshots, so its vacuum has work).

Local disk: every point of the families a Delta run passes through (stream: ``export.``,
``append.``, ``delta.``, ``lock.``, ``metadata.`` of the summary; table: ``snapshot.``,
``delta.``, ``export.``), derived from ``FAILPOINTS`` minus ``NEVER_REACHED_BY_*`` (each with why).
A listed point that is not reached fails its case (the run must die by SIGKILL), so the
lists stay honest. The table's ``lock.`` and ``metadata.`` points are the same code as the
stream's (one lock, one summary writer) and run for the stream only.

S3 (moto): one point per state a kill can leave (``OBJECT_CASES``): the Delta run is the
same code on both stores; what differs is the store's writes (no rename, temp file or fsync:
in-place uploads) and the lease, and those states are all covered.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from deltacheck import Cli, Place, check_feed, config_text, log_files, run_cli
from objectlake import store_config
from objectstores import Bucket

from export.test_crash import setup_run
from lakeexportd.failpoints import FAILPOINTS
from lakeexportd.sandbox import Sandbox

NEVER_REACHED_BY_STREAMS = {
    "export.after_prune": "a Delta stream run prunes nothing: it ends at its summary",
}
NEVER_REACHED_BY_TABLES = {
    # table runs write their snapshot in place (the log is the commit point)
    "snapshot.after_staging_dir": "in place: no staging directory",
    "snapshot.before_file_rename": "in place: nothing renamed",
    "snapshot.after_file_rename": "in place: nothing renamed",
    "snapshot.after_staging_fsync": "in place: no staging directory",
    "snapshot.before_publish": "in place: no version directory is published",
    "snapshot.after_publish": "in place: no version directory is published",
    "snapshot.mid_abort": "in place: abort removes the files, no staging directory",
    "snapshot.after_empty_file": "the sandbox's tables are never empty",
}
ON_FIRST_RUN = {"delta.after_create"}  # the table is created by the first run only
STREAM_POINTS = sorted(
    p for p in FAILPOINTS
    if p.startswith(("export.", "append.", "delta.", "lock.", "metadata."))
    and p not in NEVER_REACHED_BY_STREAMS)
TABLE_POINTS = sorted(
    p for p in FAILPOINTS if p.startswith(("snapshot.", "delta.", "export."))
    and p not in NEVER_REACHED_BY_TABLES)
# A run killed at append.mid_abort is one that failed mid-query and was aborting.
FAULTS = {"append.mid_abort": {"kind": "error_after_rows", "rows": 700}}
CASES = [("stream", p) for p in STREAM_POINTS] + [("table", p) for p in TABLE_POINTS]
# On S3 one point of each state a kill can leave (the local matrix has them all; the Delta run
# is the same code on both, only the store's writes and the lease differ): nothing written
# yet, a file half uploaded, every file uploaded, the fence passed, the log committed with the
# summary not yet written, the summary written with the lease still held, and for the table
# the create and its vacuum.
OBJECT_CASES = [
    ("stream", "export.after_header"), ("stream", "append.after_roll"),
    ("stream", "append.after_finish"), ("stream", "delta.before_log_commit"),
    ("stream", "delta.after_log_commit"), ("stream", "metadata.before_tmp_write"),
    ("stream", "lock.before_release"), ("table", "delta.after_create"),
    ("table", "snapshot.after_row_group"), ("table", "delta.after_log_commit"),
    ("table", "export.after_prune"),
]
FEEDS = {"stream": ("tx", "TRANSACTION_STREAM"), "table": ("users", "USER_SUMMARY")}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=13, preload=1500, preload_days=5) as sb:
        yield sb


_truth: dict[tuple[str, str], pa.Table] = {}


def truth(sandbox: Sandbox, source: str) -> pa.Table:
    """The sandbox's rows (the matrix adds none: read once per module and source)."""
    key = (sandbox.url, source)
    if key not in _truth:
        _truth[key] = sandbox.arrow(source)
    return _truth[key]


def local_place(tmp_path: Path) -> Place:
    return Place(root=str(tmp_path / "lake"))


def object_place(bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> Place:
    flow, options, secret, root = store_config(bucket)
    monkeypatch.setenv("LAKE_SECRET", secret)
    # A killed writer's lease blocks its feed for one ttl; the rerun (lock_wait 2s) takes it.
    return Place(root=root, lake_extra=f", lease_ttl: 1s, storage: {flow}", bucket=bucket,
                 options=options)


def export(config: Path, feed: str, failpoint: str | None = None, name: str = "run") -> Cli:
    return run_cli(["export", "-c", str(config), feed], config.parent / f"{name}.out", failpoint)


def kill_then_rerun(sandbox: Sandbox, tmp_path: Path, place: Place, kind: str,
                    point: str) -> None:
    feed, source = FEEDS[kind]
    config = tmp_path / "lakeexportd.yaml"
    config.write_text(config_text(sandbox.url, place, tmp_path / "logs"))
    if point not in ON_FIRST_RUN:
        for _ in range(2 if kind == "table" else 0):  # a table's old snapshots to vacuum
            setup_run(config, feed)
    fault = FAULTS.get(point)
    if fault:
        httpx.post(f"{sandbox.url}/_sandbox/faults",
                   json={**fault, "path": "/query-stream"}).raise_for_status()
    try:
        killed = export(config, feed, point, "killed")
    finally:
        httpx.delete(f"{sandbox.url}/_sandbox/faults").raise_for_status()
    assert killed.wait() == -signal.SIGKILL, f"{point} was never reached:\n{killed.stderr}"
    after_kill = place.keys(kind, feed)
    setup_run(config, feed)  # the rerun: an ordinary run (in process, no start-up to pay)
    table = check_feed(place, kind, feed, truth(sandbox, source))
    # The rerun wrote nothing the log does not list (the killed run's leftovers may stay:
    # unlisted, so no Delta reader sees them).
    new = place.keys(kind, feed) - after_kill
    assert new <= set(log_files(table)), sorted(new - set(log_files(table)))[:5]


def test_the_point_lists_are_failpoints_of_the_delta_write_path() -> None:
    """Every point named here is declared; the S3 cases are points of the local matrix."""
    assert {*NEVER_REACHED_BY_STREAMS, *NEVER_REACHED_BY_TABLES} <= set(FAILPOINTS)
    assert set(OBJECT_CASES) <= set(CASES)
    assert {p for _, p in CASES} >= {p for p in FAILPOINTS if p.startswith("delta.")}
    assert len(CASES) >= 40


@pytest.mark.parametrize(("kind", "point"), CASES)
def test_delta_sigkill_then_rerun_keeps_every_row_exactly_once(
    sandbox: Sandbox, tmp_path: Path, kind: str, point: str,
) -> None:
    """Local disk: killed at this point and run again, the Delta table holds each row once."""
    kill_then_rerun(sandbox, tmp_path, local_place(tmp_path), kind, point)


@pytest.mark.parametrize(("kind", "point"), OBJECT_CASES)
def test_delta_sigkill_on_s3_then_rerun_keeps_every_row_exactly_once(
    sandbox: Sandbox, tmp_path: Path, kind: str, point: str, s3_bucket: Bucket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S3 (moto): the same, where the point exists on an object store."""
    kill_then_rerun(sandbox, tmp_path, object_place(s3_bucket, monkeypatch), kind, point)
