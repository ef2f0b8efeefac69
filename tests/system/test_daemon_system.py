"""The real daemon process (``lakeexportd run``) against a real sandbox ksqlDB server.

Each test starts its own daemon on a temp lake and a free metrics port; the finalizer sends
SIGTERM and, if the daemon does not exit, kills its process group.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonproc import DEPLOY_FILES, LAKEEXPORTD, DaemonProcess, Setup, free_port, wait_for
from lakecheck import assert_consistent, assert_exactly_once, read_listed
from scrape import Samples, names, value

from lakeexportd.sandbox import Sandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=7, preload=400, rate=0) as sb:
        yield sb




STREAM = {"name": "txn", "source": "TRANSACTION_FLATTENED", "kind": "stream"}
TABLE = {"name": "users", "source": "USER_SUMMARY", "kind": "table", "retention_versions": 3}
TABLE2 = {"name": "payments", "source": "PAYMENT_TOTALS", "kind": "table"}
REALTIME = {"name": "live", "source": "TRANSACTION_STREAM", "kind": "stream", "mode": "realtime",
            "rotate": {"age": "1s", "idle": "200ms"}}


def epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def test_exports_run_on_schedule_and_metrics_agree_with_metadata(setup: Setup) -> None:
    """Every 1s both feeds export; rows, runs, versions and lag match each _metadata.json."""
    setup.write([STREAM, TABLE])
    daemon = setup.start()
    daemon.wait_runs("txn", 3)
    daemon.wait_runs("users", 3)

    def consistent_read() -> tuple[Samples, dict[str, Any], dict[str, Any]] | None:
        before = daemon.scrape()
        stream, table = setup.metadata("stream", "txn"), setup.metadata("table", "users")
        after = daemon.scrape()
        key = ("lakeexportd_export_runs_total", "success")
        same = all(value(before, key[0], feed=f, result=key[1])
                   == value(after, key[0], feed=f, result=key[1]) for f in ("txn", "users"))
        return (before, stream, table) if same else None

    scrape, stream, table = wait_for(consistent_read, 20, "a scrape between two runs")
    ok_stream = [e for e in stream["exports"] if e["status"] == "success"]
    assert value(scrape, "lakeexportd_rows_written_total", feed="txn") == (
        stream["total_records"]) == sum(e["records"] for e in ok_stream)
    assert stream["total_records"] == setup.sandbox.counts()["TRANSACTION_FLATTENED"]
    assert value(scrape, "lakeexportd_export_runs_total", feed="txn",
                 result="success") == len(ok_stream)
    ok_table = [e for e in table["exports"] if e["status"] == "success"]
    assert value(scrape, "lakeexportd_rows_written_total", feed="users") == sum(
        e["records"] for e in ok_table)
    assert value(scrape, "lakeexportd_table_versions", feed="users") == len(table["versions"])
    assert len(table["versions"]) == 3  # retention_versions
    last = value(scrape, "lakeexportd_last_success_timestamp_seconds", feed="txn")
    assert last is not None and abs(last - epoch(ok_stream[-1]["finished"])) < 2
    lag = value(scrape, "lakeexportd_lag_seconds", feed="txn")
    assert lag is not None and abs(lag - (time.time() - stream["watermark"]["rowtime_ms"] / 1000)) < 3
    assert daemon.stop() == 0
    assert_consistent(setup.lake, "stream", "txn")
    assert_consistent(setup.lake, "table", "users")
    finished = [e for e in daemon.events() if e["event"] == "export.finished"]
    assert {"feed", "run_id", "rows", "files", "bytes", "duration_s"} <= set(finished[0])
    logs = sorted(p.name for p in (setup.lake / "logs").iterdir())
    assert [re.sub(r"\d", "N", n) for n in logs] == [
        "export_NNNN_NN.log", "feed_NNNN_NN.log", "metadata_NNNN_NN.log"]
    metadata_log = next((setup.lake / "logs").glob("metadata_*")).read_text().splitlines()
    committed = [json.loads(line) for line in metadata_log]
    assert {e["event"] for e in committed} == {"metadata.committed"}


def test_health_readiness_and_every_deployed_metric_name(setup: Setup) -> None:
    """/healthz and /readyz answer 200; every metric in deploy/ appears in a real scrape
    (a realtime feed's too, once it committed)."""
    setup.write([STREAM, TABLE, REALTIME])
    daemon = setup.start()
    daemon.wait_runs("txn", 1)
    daemon.wait_runs("users", 1)
    daemon.wait_runs("live", 1)
    assert daemon.get("/healthz").status_code == 200
    assert daemon.get("/readyz").status_code == 200
    used = set()
    for path in DEPLOY_FILES:
        used |= set(re.findall(r"\blakeexportd_[a-z_]+", path.read_text()))
    assert len(used) >= 10
    missing = used - names(daemon.scrape())
    assert not missing, f"named in deploy/ but not scraped: {sorted(missing)}"
    assert daemon.stop() == 0


def test_sighup_adds_one_feed_and_removes_another(setup: Setup, tmp_path: Path) -> None:
    """SIGHUP: the new feed exports, the removed one's series vanish; systemd hears it all."""
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        setup.write([STREAM, TABLE])
        daemon = setup.start({"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "1000000"})
        daemon.wait_runs("users", 1)
        setup.write([STREAM, TABLE2])
        daemon.send(signal.SIGHUP)
        daemon.wait_runs("payments", 1)
        scrape = daemon.scrape()
        assert value(scrape, "lakeexportd_config_reloads_total", result="success") == 1
        assert not any(("feed", "users") in labels for _, labels in scrape)
        runs_of_users = len(setup.metadata("table", "users")["exports"])
        daemon.wait_runs("txn", daemon.runs("txn") + 2)
        assert len(setup.metadata("table", "users")["exports"]) == runs_of_users
        assert daemon.stop() == 0
        sock.settimeout(0.5)
        messages = []
        while True:
            try:
                messages.append(sock.recv(4096).decode().splitlines()[0])
            except TimeoutError:
                break
    lifecycle = [m for m in messages if m != "WATCHDOG=1"]
    assert lifecycle == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    assert "WATCHDOG=1" in messages  # pinged at half of WATCHDOG_USEC
    feed_log = next((setup.lake / "logs").glob("feed_*.log")).read_text()
    events = [(e["event"], e.get("feed")) for e in map(json.loads, feed_log.splitlines())]
    assert ("feed.added", "payments") in events and ("feed.removed", "users") in events


def test_a_broken_file_on_sighup_keeps_the_old_feeds(setup: Setup) -> None:
    """An invalid file on SIGHUP: the error is counted and logged, the feeds keep exporting."""
    setup.write([STREAM])
    daemon = setup.start()
    daemon.wait_runs("txn", 1)
    setup.config.write_text("feeds: [this is not: valid yaml\n")
    daemon.send(signal.SIGHUP)
    wait_for(lambda: value(daemon.scrape(), "lakeexportd_config_reloads_total",
                           result="error") == 1, 10, "the reload error to be counted")
    before = daemon.runs("txn")
    daemon.wait_runs("txn", before + 2)
    assert daemon.get("/readyz").status_code == 200
    assert daemon.stop() == 0
    (failed,) = [e for e in daemon.events() if e["event"] == "config.reload_failed"]
    assert str(setup.config) in failed["reason"] and failed["kept_feeds"] == ["txn"]


def test_sigterm_during_an_export_exits_0_and_leaves_the_lake_consistent(
    setup: Setup, sandbox: Sandbox
) -> None:
    """SIGTERM mid-export: past stop_grace the run aborts unpublished, exit 0; a restart
    then exports every row exactly once."""
    sandbox.inject("latency", seconds=4, path="/query-stream", count=1)
    setup.write([STREAM], stop_grace="500ms")
    daemon = setup.start()
    time.sleep(0.5)  # the first run is waiting for its answer
    started = time.monotonic()
    daemon.send(signal.SIGTERM)
    assert daemon.proc.wait(20) == 0
    assert time.monotonic() - started < 15
    events = daemon.events()
    assert any(e["event"] == "daemon.aborting_exports" for e in events)
    (aborted,) = [e for e in events if e["event"] == "export.failed"]
    assert aborted["result"] == "aborted"
    assert setup.metadata("stream", "txn")["partitions"] == []  # nothing published
    assert_consistent(setup.lake, "stream", "txn")

    again = setup.start()
    again.wait_runs("txn", 1)
    assert again.stop() == 0
    assert_consistent(setup.lake, "stream", "txn")
    assert_exactly_once(read_listed(setup.lake, "stream", "txn"),
                        sandbox.arrow("TRANSACTION_FLATTENED"))


def test_an_invalid_config_at_start_exits_78(tmp_path: Path) -> None:
    """A config error at start: exit 78 with the file and key path on stderr, no traceback."""
    config = tmp_path / "bad.yaml"
    config.write_text("ksqldb: {url: http://127.0.0.1:1}\nlake: {root: lake}\nfeeds: []\n"
                      "scheduler: {wokers: 2}\n")
    done = subprocess.run([str(LAKEEXPORTD), "run", "-c", str(config)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 78
    assert str(config) in done.stderr and "wokers" in done.stderr
    assert "Traceback" not in done.stderr
    missing = subprocess.run([str(LAKEEXPORTD), "run", "-c", str(tmp_path / "none.yaml")],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 78


def status(config: Path) -> tuple[int, dict[str, Any], str]:
    """`lakeexportd status --json` and the table output, as an operator runs them."""
    as_json = subprocess.run([str(LAKEEXPORTD), "status", "-c", str(config), "--json"],
                             capture_output=True, text=True, timeout=30)
    table = subprocess.run([str(LAKEEXPORTD), "status", "-c", str(config)],
                           capture_output=True, text=True, timeout=30)
    assert table.returncode == as_json.returncode, table.stderr
    return as_json.returncode, json.loads(as_json.stdout), table.stdout


def test_status_shows_feeds_daemons_and_a_second_daemon_on_the_lake(setup: Setup) -> None:
    """status: per feed state, last run, result, lag, next run; the daemon(s) on the lake; a
    second daemon with the same config is refused with a message naming the first."""
    setup.write([STREAM, {**TABLE, "schedule": {"every": "1h"}}])
    code, before, text = status(setup.config)
    assert code == 0 and before["daemons"] == [] and "no daemon runs on this lake" in text
    first = setup.start()
    first.wait_runs("txn", 1)
    first.wait_runs("users", 1)
    code, now, text = status(setup.config)
    (daemon,) = now["daemons"]
    assert daemon["pid"] == first.proc.pid and daemon["answers"]
    feeds = {f["feed"]: f for f in now["feeds"]}
    assert feeds["txn"]["state"] == "active" and feeds["txn"]["result"] == "success"
    assert feeds["txn"]["lag_s"] is not None and feeds["txn"]["daemons"] == [first.proc.pid]
    nxt = dt.datetime.fromisoformat(feeds["users"]["next_run"])
    assert 3000 < (nxt - dt.datetime.now(dt.UTC)).total_seconds() <= 3600
    assert f"daemon: pid {first.proc.pid}" in text and re.search(r"users\s+active\s+table", text)
    # The same config again: its metrics port is taken; the message names the running daemon.
    second = subprocess.run([str(LAKEEXPORTD), "run", "-c", str(setup.config)],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode != 0
    assert "Another lakeexportd already runs on this lake" in second.stderr
    assert f"pid {first.proc.pid}" in second.stderr
    # A standby with its own metrics port runs; status warns that two daemons share the lake.
    other_port = free_port()
    standby_config = setup.tmp / "standby.yaml"
    standby_config.write_text(setup.config.read_text().replace(f":{setup.port}", f":{other_port}"))
    standby = DaemonProcess(standby_config, other_port)
    setup.daemons.append(standby)
    standby.wait_ready()
    code, both, text = status(setup.config)
    assert sorted(d["pid"] for d in both["daemons"]) == sorted([first.proc.pid, standby.proc.pid])
    assert "warning: 2 daemons run on this lake" in text
    assert any(e["event"] == "daemon.another_on_lake" for e in standby.events())
    standby.kill()  # SIGKILL: its entry stays on disk, but status sees it is gone
    code, after, _ = status(setup.config)
    assert [d["pid"] for d in after["daemons"]] == [first.proc.pid]
