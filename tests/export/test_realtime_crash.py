"""Realtime crash matrix: SIGKILL a real ``lakeexportd run`` daemon at each failpoint of the
rotation and commit path, restart it, and check the lake holds every row exactly once.

Issue 15, requirement 2. Each case: a sandbox in this process (it outlives the daemons), a
daemon with one realtime feed (``rotate: {age: 0.5s, idle: 0.3s}``) started with
``LAKEEXPORTD_FAILPOINT=<point>:<N>``; rounds of rows (rows of now and rows a day late, so
each rotation commits files of several day partitions) until the failpoint kills it; more
rows while no daemon runs; a second daemon without the failpoint, which must resume from the
committed offsets, gets more rows, and is stopped with SIGTERM. The lake, read with polars
(the files ``_metadata.json`` lists) or deltalake, must then hold each row of the stream
exactly once (``rtlake.assert_exactly_once``), its offsets must be the stream's end, and a
Parquet feed must have no file its document does not list.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import deltalake
import pytest
import yaml
from rtlake import (
    STREAM,
    assert_exactly_once,
    committed_records,
    document,
    end_offsets,
    feed_dir,
    lake_rows,
    now_ms,
    truth_rows,
    unlisted_data_files,
    wait_for,
)
from scrape import value
from system.daemonproc import DaemonProcess, free_port

from lakeexportd.failpoints import FAILPOINTS
from lakeexportd.sandbox import Sandbox

DAY_MS = 86_400_000

# (format, failpoint, N): the daemon dies at the Nth hit. Rotation 1 commits the preload
# (300 rows over 3 days), rotation k+1 round k's rows, so N=2 of a point hit once per
# rotation dies in the rotation of the first round, after a commit with offsets.
# N=0: the first file of rotation 2 (rotation 1 renames one file per day of the preload).
MATRIX = [
    ("parquet", "realtime.after_rows", 1),  # rotation 1: no offsets committed yet
    ("parquet", "realtime.after_rows", 5),  # hit per batch of rows: a later rotation
    ("parquet", "realtime.before_rotate", 2),
    ("parquet", "append.after_rename", 0),  # rotation 2: one file renamed, not the other
    ("parquet", "append.after_finish", 2),
    ("parquet", "realtime.before_commit", 1),  # the first rotation: no offsets committed yet
    ("parquet", "realtime.before_commit", 2),
    ("parquet", "export.before_commit", 3),  # hit 1 is the feed's first, empty document
    ("parquet", "metadata.after_replace", 3),  # committed, directory not fsynced
    ("parquet", "export.after_commit", 2),
    ("parquet", "realtime.after_commit", 2),
    ("delta", "delta.after_create", 1),  # the table made by the first rotation, no data
    ("delta", "realtime.after_rows", 5),
    ("delta", "realtime.before_commit", 2),
    ("delta", "delta.before_log_commit", 2),
    ("delta", "delta.after_log_commit", 2),  # in the log; _metadata.json not rewritten
    ("delta", "export.after_commit", 2),
    ("delta", "realtime.after_commit", 2),
]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """One per case (it starts in milliseconds): its stream is the case's ground truth."""
    with Sandbox.start(seed=15, preload=300, preload_days=2) as sb:
        yield sb


REALTIME = {"mode": "realtime", "rotate": {"age": "0.5s", "idle": "0.3s"}}
BATCH = {"schedule": {"every": "1s"}, "settle_delay": "1s"}


def write_config(tmp: Path, sb: Sandbox, fmt: str, port: int,
                 mode: dict[str, Any] = REALTIME) -> Path:
    config = tmp / "lakeexportd.yaml"
    config.write_text(yaml.safe_dump({
        "ksqldb": {"url": sb.url, "connect_timeout": "2s", "max_retries": 1},
        "lake": {"root": str(tmp / "lake")},
        "scheduler": {"stop_grace": "15s", "lock_wait": "2s"},
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "feeds": [{"name": "rt", "source": STREAM, "kind": "stream", "format": fmt, **mode}],
    }))
    return config


def daemon(tmp: Path, sb: Sandbox, fmt: str, failpoint: str | None = None) -> DaemonProcess:
    port = free_port()
    env = {"LAKEEXPORTD_FAILPOINT": failpoint} if failpoint else {}
    return DaemonProcess(write_config(tmp, sb, fmt, port), port, env)


def rows(sb: Sandbox, now: int, late: int, days_ago: float = 1.0) -> None:
    """``now`` rows of now and ``late`` rows ``days_ago`` days old."""
    sb.generate(now)
    at = now_ms() - int(days_ago * DAY_MS)
    sb.generate(late, (at, at + 60_000))


def committed_offsets(folder: Path, fmt: str) -> dict[str, int] | None:
    """The offsets the lake holds now, as a reader finds them (Delta: the log)."""
    if fmt == "parquet":
        offsets = document(folder).get("offsets")
        return None if offsets is None else dict(offsets["partitions"])
    if not (folder / "_delta_log").exists():
        return None
    table = deltalake.DeltaTable(str(folder))
    found = {str(p): table.transaction_version(f"lakeexportd:rt#partition-{p}")
             for p in range(16)}
    return {p: v for p, v in found.items() if v is not None} or None


def first_query(events: list[dict[str, Any]]) -> dict[str, int]:
    started = next(e for e in events if e["event"] == "realtime.query_started")
    return {str(p): o for p, o in started["partitions"].items()}


@pytest.mark.parametrize(("fmt", "point", "nth"), MATRIX,
                         ids=[f"{f}-{p}:{n}" for f, p, n in MATRIX])
def test_kill_at_failpoint_then_restart(sandbox: Sandbox, tmp_path: Path, fmt: str,
                                        point: str, nth: int) -> None:
    assert point in FAILPOINTS
    sb = sandbox
    folder = feed_dir(tmp_path / "lake")
    if nth == 0:
        nth = len({r["ROWTIME"] // DAY_MS for r in sb.rows(STREAM)}) + 1

    # The daemon dies at the failpoint: rounds of rows until it does.
    killed = daemon(tmp_path, sb, fmt, f"{point}:{nth}")
    rounds = 0
    try:
        while True:  # round 0: the preload, alone in rotation 1
            total = sb.counts()[STREAM]
            wait_for(lambda n=total: killed.proc.poll() is not None
                     or committed_records(folder) >= n,
                     30, f"a commit of {total} rows or the kill at {point}:{nth}")
            if killed.proc.poll() is not None or rounds == 20:
                break
            rounds += 1
            rows(sb, 40, 10)
        returncode = killed.proc.wait(30)
    finally:
        if killed.proc.poll() is None:
            killed.kill()
    assert returncode == -signal.SIGKILL, killed.stderr[-3000:]
    at_kill = committed_offsets(folder, fmt)
    print(f"{fmt} {point}:{nth}: dead after round {rounds}, {committed_records(folder)} of "
          f"{sb.counts()[STREAM]} rows committed, offsets {at_kill}")

    # Rows while no daemon runs, then a daemon without the failpoint.
    rows(sb, 100, 20, days_ago=2.0)
    survivor = daemon(tmp_path, sb, fmt)
    try:
        survivor.wait_ready()
        rows(sb, 100, 20)
        total = sb.counts()[STREAM]
        wait_for(lambda: committed_records(folder) >= total, 30, f"{total} rows committed")
        assert survivor.stop() == 0, survivor.stderr[-3000:]
    finally:
        if survivor.proc.poll() is None:
            survivor.kill()

    assert_exactly_once(lake_rows(folder, fmt), truth_rows(sb))
    events = survivor.events()
    assert first_query(events) == (at_kill or {})  # it resumed from the committed offsets
    assert not [e for e in events if e["level"] in ("error", "critical")], events
    assert committed_offsets(folder, fmt) == end_offsets(sb)
    if fmt == "parquet":
        assert unlisted_data_files(folder) == []


# -- the daemon switches a feed batch -> realtime -> batch (SIGHUP) ------------------------------

def test_sighup_switches_batch_realtime_batch(tmp_path: Path) -> None:
    """The YAML rewritten and SIGHUP, twice: each row once, late rows included, except
    exactly the rows the switches leave out by design (``test_realtime.py``'s switch test
    says which and why): rows appended after the last batch run with ROWTIME at or below
    its watermark, and rows appended after the switch back more than settle_delay before
    the realtime watermark."""
    with Sandbox.start(seed=16, preload=300, preload_days=2, max_disorder_ms=0) as sb:
        folder = feed_dir(tmp_path / "lake")
        port = free_port()
        config = write_config(tmp_path, sb, "parquet", port, BATCH)
        left_out: list[tuple[str, int]] = []

        def make(count: int, span: tuple[int, int] | None = None) -> list[tuple[str, int]]:
            before = sb.counts()[STREAM]
            sb.generate(count, span)
            return truth_rows(sb, sb.rows(STREAM)[before:])

        def status() -> dict[str, Any]:
            feed: dict[str, Any] = running.get("/status").json()["feeds"]["rt"]
            return feed

        running = DaemonProcess(config, port)
        try:
            running.wait_ready()
            running.wait_runs("rt", 1)
            make(100)
            # batch -> realtime
            write_config(tmp_path, sb, "parquet", port, REALTIME)
            running.send(signal.SIGHUP)
            wait_for(lambda: status().get("query", {}).get("state") == "running", 30,
                     "the realtime query")
            wait_for(lambda: document(folder).get("offsets"), 30, "a realtime commit")
            after = document(folder)["offsets"]["after_ms"]
            assert after is not None  # the last batch run's watermark
            make(200)
            make(50, (after + 1, after + 1000))  # late, but after the batch watermark
            left_out += make(20, (after - 5000, after))  # at or below it: left out
            # Rows 5 s ahead: the realtime watermark W is then 5 s in the future, so the
            # batch runs after the switch back wait (about 6 s, now - settle_delay <= W)
            # until the late rows below are there.
            ahead = now_ms() + 5000
            make(5, (ahead, ahead))
            expected = sb.counts()[STREAM] - len(left_out)
            wait_for(lambda: committed_records(folder) >= expected, 30, "realtime rows")
            # realtime -> batch: the reload stops the query and commits before it returns
            write_config(tmp_path, sb, "parquet", port, BATCH)
            running.send(signal.SIGHUP)
            # The reload returns (and is counted) once the query stopped and committed.
            wait_for(lambda: value(running.scrape(), "lakeexportd_config_reloads_total",
                                   result="success") == 2, 30, "the second reload")
            assert "query" not in status()
            realtime_watermark = document(folder)["watermark"]["rowtime_ms"]
            assert realtime_watermark == max(r[1] for r in truth_rows(sb))
            # less than settle_delay (1 s) before W: the first batch run's overlap takes them
            landing = make(20, (realtime_watermark - 500, realtime_watermark))
            # more than settle_delay before W: late for batch mode
            left_out += make(10, (realtime_watermark - 5000, realtime_watermark - 2000))
            make(100, (realtime_watermark + 1, realtime_watermark + 1000))  # after W
            expected = sb.counts()[STREAM] - len(left_out)
            wait_for(lambda: committed_records(folder) >= expected, 30, "batch rows again")
            assert set(landing) <= set(lake_rows(folder, "parquet"))
            assert document(folder).get("offsets") is None
            assert running.stop() == 0, running.stderr[-3000:]
        finally:
            if running.proc.poll() is None:
                running.kill()
        assert_exactly_once(lake_rows(folder, "parquet"),
                            [r for r in truth_rows(sb) if r not in set(left_out)])
        assert len(left_out) == 30
        assert unlisted_data_files(folder) == []
