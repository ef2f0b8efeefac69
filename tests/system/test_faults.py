"""Fault injection against the real daemon: each fault ends in a clear error (log line and
metric), leaves no partial file visible and ``_metadata.json`` intact, and the next tick after
the fault is gone exports every row exactly once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemonproc import DaemonProcess, Setup, free_port, wait_for
from lakecheck import assert_consistent, assert_exactly_once, read_listed
from scrape import value

from lakeexportd.sandbox import Sandbox

STREAM = {"name": "txn", "source": "TRANSACTION_FLATTENED", "kind": "stream"}
SOURCE = "TRANSACTION_FLATTENED"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=31, preload=1500, preload_days=3) as sb:
        yield sb




def failures(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [e for e in daemon.events() if e["event"] == "export.failed"]


def wait_failed(daemon: DaemonProcess, result: str, text: str, timeout: float = 40) -> dict[str, Any]:
    """Wait for a failed run counted under ``result`` whose log line mentions ``text``."""
    wait_for(lambda: daemon.runs("txn", result) >= 1, timeout, f"a {result} run")
    line = wait_for(lambda: [e for e in failures(daemon) if text in e["error"]], 10, f"export.failed with {text!r}")[0]
    assert line["feed"] == "txn" and line["run_id"] and line["result"] == result
    return line


def assert_nothing_partial(lake: Path) -> None:
    """Readers see only listed files, and _metadata.json (if any) parses and agrees."""
    meta = lake / "streams/txn/_metadata.json"
    if meta.exists():
        doc = json.loads(meta.read_text())
        assert doc["last_status"] in ("failed", "success")
        assert_consistent(lake, "stream", "txn")
    else:
        assert not list((lake / "streams").rglob("*.parquet")) if (lake / "streams").exists() else True
    assert not [p for p in lake.rglob("*") if p.name.endswith(".tmp")]


def recover(setup: Setup, daemon: DaemonProcess, clear: Callable[[], None]) -> None:
    """Remove the fault, wait for the next good run, stop, and check every row once."""
    clear()
    before = daemon.runs("txn")
    wait_for(lambda: daemon.runs("txn") > before, 40, "a successful run after the fault")
    assert daemon.stop() == 0
    assert_exactly_once(read_listed(setup.lake, "stream", "txn"), setup.sandbox.arrow(SOURCE))
    assert_consistent(setup.lake, "stream", "txn")


@pytest.mark.parametrize(
    ("fault", "result", "text"),
    [
        ({"kind": "status", "status": 500}, "transient", "HTTP 500"),
        ({"kind": "status", "status": 503}, "transient", "HTTP 503"),
        ({"kind": "status", "status": 429}, "transient", "rate limit"),
        ({"kind": "cut_after_rows", "rows": 700}, "transient", "broke"),
        ({"kind": "error_after_rows", "rows": 700}, "transient", "Failure in processing"),
        ({"kind": "malformed_line", "rows": 700}, "transient", "row 701"),
        ({"kind": "wrong_column_count", "rows": 700}, "transient", "row 701 has"),
        ({"kind": "latency", "seconds": 4}, "transient", "ReadTimeout"),
    ],
    ids=["500-storm", "503-storm", "429-storm", "cut-mid-row", "mid-stream-error", "malformed-line",
         "wrong-column-count", "slower-than-read-timeout"],
)
def test_fault_fails_cleanly_then_recovers(setup: Setup, fault: dict[str, Any], result: str, text: str) -> None:
    """The fault fails runs with a clear logged error and metric; the next clean tick is exact."""
    setup.write([STREAM], ksqldb={"read_timeout": "1500ms"})
    setup.sandbox.inject(path="/query-stream", count=None, **fault)
    daemon = setup.start()
    wait_failed(daemon, result, text)
    if fault["kind"] == "status":
        scrape = daemon.scrape()
        assert (value(scrape, "lakeexportd_retries_total", feed="txn") or 0) >= 1
        assert (value(scrape, "lakeexportd_ksqldb_requests_total", endpoint="/query-stream", code=str(fault["status"])) or 0) >= 2
    assert_nothing_partial(setup.lake)
    recover(setup, daemon, setup.sandbox.clear_faults)


def test_ten_megabyte_row_is_exported(setup: Setup) -> None:
    """A 10 MB value in one row is exported intact by a normal run."""
    setup.write([STREAM])
    setup.sandbox.inject("big_row_bytes", bytes=10_000_000, rows=5, path="/query-stream")
    daemon = setup.start()
    daemon.wait_runs("txn", 1)
    assert daemon.stop() == 0
    lake = read_listed(setup.lake, "stream", "txn")
    ids = lake.column("TRANSACTION_ID").to_pylist()
    assert len(ids) == setup.sandbox.arrow(SOURCE).num_rows
    assert max(len(i) for i in ids) == 10_000_000
    assert_consistent(setup.lake, "stream", "txn")


def test_ksqldb_down_at_start_then_up(tmp_path: Path) -> None:
    """With nothing listening the runs fail as transient; once ksqlDB is up, the next tick exports."""
    port = free_port()
    placeholder = Sandbox.__new__(Sandbox)  # only its url is used by Setup.write
    placeholder.url = f"http://127.0.0.1:{port}"
    setup = Setup(tmp_path, placeholder)
    setup.write([STREAM])
    daemon = setup.start()
    try:
        wait_failed(daemon, "transient", f"cannot reach ksqlDB at http://127.0.0.1:{port}")
        assert_nothing_partial(setup.lake)
        with Sandbox.start(port=port, seed=31, preload=300, preload_days=1) as sb:
            setup.sandbox = sb
            recover(setup, daemon, lambda: None)
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()


def test_ksqldb_down_mid_stream(tmp_path: Path) -> None:
    """ksqlDB dying while it streams fails the run; a restarted ksqlDB gets every row once."""
    port = free_port()
    clock = time.time() - 60  # a pinned clock: the restarted sandbox holds the same rows

    def start() -> Sandbox:
        return Sandbox.start(port=port, seed=32, preload=1500, preload_days=1, clock=lambda: clock)

    sb = start()
    setup = Setup(tmp_path, sb)
    setup.write([STREAM])
    sb.inject("trickle", seconds=0.05, chunk_bytes=4096, path="/query-stream", count=None)
    daemon = setup.start()
    try:
        wait_for(lambda: httpx.get(f"{sb.url}/_sandbox/stats").json()["running_queries"], 15, "a running query")
        sb.stop()
        wait_failed(daemon, "transient", "")
        assert_nothing_partial(setup.lake)
        with start() as again:
            setup.sandbox = again
            recover(setup, daemon, lambda: None)
    finally:
        sb.stop()
        if daemon.proc.poll() is None:
            daemon.kill()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted where the test's lake goes: a real file system that fills up."""
    mount = tmp_path / "lake"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave_bytes: int) -> Path:
    """Fill ``disk`` with one file so that about ``leave_bytes`` stay free."""
    filler = disk / ".filler"
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))
    return filler


def test_disk_full_while_writing_data(setup: Setup, small_disk: Path) -> None:
    """ENOSPC while writing Parquet fails the run, removes its temps, keeps the metadata."""
    setup.write([STREAM])
    filler = fill(small_disk, 8192)
    daemon = setup.start()
    wait_failed(daemon, "failed", "No space left on device")
    assert_nothing_partial(setup.lake)
    recover(setup, daemon, filler.unlink)


def test_disk_full_while_committing_metadata(setup: Setup) -> None:
    """ENOSPC while writing _metadata.json fails the run; the new files are not left visible.

    The disk fills at exactly that step through the failpoint hook (``:enospc``): on a real
    small disk the data files and the metadata need too similar an amount of room to aim at it.
    """
    setup.write([STREAM])
    daemon = setup.start(env={"LAKEEXPORTD_FAILPOINT": "metadata.after_tmp_write:enospc"})
    line = wait_failed(daemon, "failed", "No space left on device")
    assert "_metadata.json" in line["error"]
    assert_nothing_partial(setup.lake)  # the files this run renamed were removed with it
    assert not list((setup.lake / "streams").rglob("*.parquet"))
    assert daemon.stop() == 0
    daemon = setup.start()  # the same daemon without the fault
    recover(setup, daemon, lambda: None)


def test_read_only_lake(setup: Setup, small_disk: Path) -> None:
    """A read-only lake fails each run with a clear error; once writable, the next tick exports."""
    setup.write([STREAM], logging={"dir": str(setup.tmp / "logs")})
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    daemon = setup.start()
    wait_failed(daemon, "failed", "Read-only file system")
    recover(setup, daemon, lambda: subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True))
    assert shutil.disk_usage(small_disk).used > 0


def test_sigterm_while_ksqldb_is_silent_exits_within_stop_grace(setup: Setup) -> None:
    """ksqlDB answers nothing for 60 s (read_timeout 30 s, 3 retries): SIGTERM still ends the
    daemon within stop_grace plus a moment, with no new attempt after the abort."""
    setup.write([STREAM], ksqldb={"read_timeout": "30s", "max_retries": 3}, stop_grace="1s")
    setup.sandbox.inject("latency", seconds=60, path="/query-stream")
    daemon = setup.start()
    wait_for(lambda: daemon.get("/status").json()["feeds"]["txn"]["running"], 20, "a running export")
    started = time.monotonic()
    assert daemon.stop(timeout=30) == 0
    assert time.monotonic() - started < 6  # 1 s of grace, then the abort, not 30 s per attempt
    events = [e["event"] for e in daemon.events()]
    assert "daemon.aborting_exports" in events and "ksqldb.retry" not in events
    assert_nothing_partial(setup.lake)
