"""Realtime feeds in the real daemon (issue 15, req. 1 and 5): ``lakeexportd run`` processes
against the sandbox, on a local lake, moto's S3 and Azurite.

- SIGTERM sends ``/close-query`` (the sandbox's own request log and running-query count say
  so), commits what the query delivered, exits 0; a restart resumes after the offsets.
- SIGHUP changing ``rotate``, adding a second realtime feed, switching a feed to batch: no
  row lost or doubled.
- ``/status`` and ``/metrics`` show each query: running on the holder, standby on a second
  daemon of the same lake, ``lakeexportd_realtime_lag_seconds`` against the ground truth.
- On S3 a standby daemon takes a realtime feed over after ``kill -9`` of its holder, once the
  lease ttl ran out, and resumes after the holder's committed offsets.
- Both formats on object stores: Delta on S3 (read with delta-rs), Parquet on Azurite.

Ground truth is ``Sandbox.rows`` / ``Sandbox.arrow`` (every row of the stream: a realtime feed
starts at the earliest offset). The lake is read with pyarrow, polars and deltalake from what
the store holds; ``_metadata.json`` is read as plain JSON; never through lakeexportd.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import obstore
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from daemonproc import LAKEEXPORTD, DaemonProcess, free_port, wait_for
from deltacheck import Place, check_feed
from lakecheck import assert_exactly_once
from objectlake import document, lease_owner, store_config
from objectstores import Bucket
from scrape import value

from lakeexportd.sandbox import Sandbox

SOURCE = "TRANSACTION_FLATTENED"
TTL = 3.0  # lake.lease_ttl on object stores
LOCK_WAIT = 1.0  # scheduler.lock_wait: how long a standby's try for the feed's lock waits
STANDBY_RETRY = 5.0  # service/realtime.py LOCKED_RETRY_S: a standby tries the lock this often
ENV = {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this tree's lakeexportd


def realtime(name: str = "tx", **rotate: str | int) -> dict[str, Any]:
    feed: dict[str, Any] = {"name": name, "source": SOURCE, "kind": "stream",
                            "mode": "realtime"}
    if rotate:
        feed["rotate"] = rotate
    return feed


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One sandbox for the module (each test has its own lake; a realtime feed reads the
    whole stream from its first row). No disorder: rows generated later have later ROWTIMEs,
    so the batch mode a feed is switched to misses none (batch runs cut by ROWTIME)."""
    with Sandbox.start(seed=15, preload=300, preload_days=2, rate=0, max_disorder_ms=0) as sb:
        yield sb


class Requests:
    """The sandbox's own record of the requests it served (a wrapper of its router)."""

    def __init__(self, sb: Sandbox) -> None:
        self.seen: list[tuple[str, str, bytes]] = []
        route = sb.app._route

        async def recording(method: str, path: str, body: bytes, *args: Any) -> None:
            self.seen.append((method, path, body))
            await route(method, path, body, *args)

        sb.app._route = recording  # type: ignore[method-assign]

    def closed(self) -> list[str]:
        """Query ids of every ``/close-query`` received."""
        return [json.loads(body)["queryId"] for method, path, body in self.seen
                if (method, path) == ("POST", "/close-query")]


@pytest.fixture(scope="module")
def requests(sandbox: Sandbox) -> Requests:
    return Requests(sandbox)


def running_queries(sb: Sandbox) -> int:
    stats = httpx.get(f"{sb.url}/_sandbox/stats", timeout=5).json()
    return int(stats["running_queries"])


def truth_count(sb: Sandbox) -> int:
    return sb.counts()[SOURCE]


# -- a lake and the daemons on it ----------------------------------------------------------------

class Rig:
    """A lake (a local folder or a prefix in a test bucket), configs and daemons on it."""

    def __init__(self, tmp: Path, sb: Sandbox, bucket: Bucket | None = None) -> None:
        self.tmp = tmp
        self.sb = sb
        self.bucket = bucket
        self.env = dict(ENV)
        if bucket is None:
            self.root = str(tmp / "lake")
            self.lake_yaml = f"{{root: '{self.root}'}}"
            self.options: dict[str, str] = {}
        else:
            flow, self.options, secret, self.root = store_config(bucket)
            self.lake_yaml = f"{{root: '{self.root}', lease_ttl: {TTL:g}s, storage: {flow}}}"
            self.env["LAKE_SECRET"] = secret
        self.daemons: list[DaemonProcess] = []

    def write(self, name: str, feeds: list[dict[str, Any]], port: int,
              every: str = "1s") -> Path:
        folder = self.tmp / name
        folder.mkdir(exist_ok=True)
        path = folder / "lakeexportd.yaml"
        path.write_text(
            f"ksqldb: {{url: '{self.sb.url}', max_retries: 1, connect_timeout: 2s, "
            "read_timeout: 30s}\n"
            f"lake: {self.lake_yaml}\n"
            f"scheduler: {{workers: 2, stop_grace: 20s, lock_wait: {LOCK_WAIT:g}s}}\n"
            f"defaults: {{schedule: {{every: {every}}}, settle_delay: 1s}}\n"
            f"metrics: {{listen: '127.0.0.1:{port}'}}\n"
            f"logging: {{dir: '{folder / 'logs'}', level: debug}}\n"
            f"feeds: {json.dumps(feeds)}\n")
        return path

    def start(self, name: str, feeds: list[dict[str, Any]]) -> DaemonProcess:
        port = free_port()
        daemon = DaemonProcess(self.write(name, feeds, port), port, self.env)
        self.daemons.append(daemon)
        daemon.wait_ready()
        return daemon

    def reload(self, daemon: DaemonProcess, name: str, feeds: list[dict[str, Any]],
               every: str = "1s") -> None:
        """Rewrite ``daemon``'s config and SIGHUP it; returns once it reloaded."""
        before = reloads(daemon)
        self.write(name, feeds, daemon.port, every)
        daemon.send(signal.SIGHUP)
        wait_for(lambda: reloads(daemon) > before, 60, "the reload")

    def events(self, daemon: DaemonProcess) -> list[dict[str, Any]]:
        found = []
        for log in sorted((daemon.config.parent / "logs").glob("*.log")):
            found += [json.loads(line) for line in log.read_text().splitlines() if line]
        return sorted(found, key=lambda e: e["timestamp"])

    def metadata(self, feed: str) -> dict[str, Any] | None:
        if self.bucket is not None:
            return document(self.bucket, "lake", "stream", feed)
        path = Path(self.root) / "streams" / feed / "_metadata.json"
        return json.loads(path.read_text()) if path.exists() else None

    def committed(self, feed: str) -> int:
        doc = self.metadata(feed)
        return -1 if doc is None else int(doc["total_records"])

    def wait_committed(self, feed: str, timeout: float = 60) -> None:
        """Until the feed's committed rows are as many as the stream holds."""
        wait_for(lambda: self.committed(feed) == truth_count(self.sb), timeout,
                 f"{feed} to commit all {truth_count(self.sb)} rows "
                 f"(has {self.committed(feed)})")

    # -- reading the lake without lakeexportd ---------------------------------------------------

    def listed(self, feed: str) -> list[str]:
        doc = self.metadata(feed)
        assert doc is not None, f"{feed} has no _metadata.json"
        return [f"{g['path']}/{f['name']}" for g in doc["partitions"] for f in g["files"]]

    def parquet_rows(self, feed: str) -> pa.Table:
        """Every row of the files ``_metadata.json`` lists, read with pyarrow."""
        tables = []
        for key in self.listed(feed):
            if self.bucket is None:
                tables.append(pq.read_table(Path(self.root) / "streams" / feed / key))
            else:
                data = obstore.get(self.bucket.store, f"lake/streams/{feed}/{key}").bytes()
                tables.append(pq.read_table(io.BytesIO(bytes(data))))
        return pa.concat_tables(tables, promote_options="default")

    def check_parquet(self, feed: str) -> int:
        """The feed holds every row of the stream once, values and types as the sandbox's;
        on a local lake polars, reading every Parquet file in the folder, agrees (nothing
        unlisted holds rows). Returns the row count."""
        rows = self.parquet_rows(feed)
        assert_exactly_once(rows, self.sb.arrow(SOURCE))
        if self.bucket is None:
            folder = Path(self.root) / "streams" / feed
            on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet"))
            assert on_disk == sorted(self.listed(feed)), "files on disk that are not listed"
            frame = pl.scan_parquet(f"{folder}/**/*.parquet", hive_partitioning=False) \
                .select("TRANSACTION_ID", "ROWTIME").collect()
            truth = {r["TRANSACTION_ID"]: r["ROWTIME"] for r in self.sb.rows(SOURCE)}
            assert frame.height == len(truth) == frame["TRANSACTION_ID"].n_unique()
            assert dict(zip(frame["TRANSACTION_ID"], frame["ROWTIME"], strict=True)) == truth
        return rows.num_rows

    def close(self) -> None:
        for daemon in self.daemons:
            if daemon.proc.poll() is None:
                daemon.kill()


@pytest.fixture
def rig(tmp_path: Path, sandbox: Sandbox) -> Iterator[Rig]:
    r = Rig(tmp_path, sandbox)
    yield r
    r.close()


def reloads(daemon: DaemonProcess) -> float:
    return value(daemon.scrape(), "lakeexportd_config_reloads_total", result="success") or 0


def query(daemon: DaemonProcess, feed: str = "tx") -> dict[str, Any]:
    """The feed's query as ``/status`` shows it (state None: not a realtime feed there)."""
    info: dict[str, Any] | None = daemon.get("/status").json()["feeds"].get(feed)
    if info is None or "query" not in info:
        return {"state": None, "commits": 0, "pending_rows": 0, **(info or {})}
    query: dict[str, Any] = info["query"]
    return query


def state_gauge(daemon: DaemonProcess, feed: str = "tx") -> str | None:
    """The state whose ``lakeexportd_realtime_query`` sample is 1."""
    samples = daemon.scrape()
    on = [dict(labels)["state"] for (name, labels), v in samples.items()
          if name == "lakeexportd_realtime_query" and dict(labels)["feed"] == feed and v == 1]
    assert len(on) <= 1, on
    return on[0] if on else None


def no_errors(events: list[dict[str, Any]]) -> None:
    bad = [e for e in events if e["level"] in ("error", "critical")]
    assert not bad, bad


# -- SIGTERM -------------------------------------------------------------------------------------

def test_sigterm_closes_the_query_and_commits_what_it_delivered(
    rig: Rig, sandbox: Sandbox, requests: Requests,
) -> None:
    """With nothing due for rotation (age and idle 1h), every row is delivered but none
    committed; SIGTERM: /close-query of that very query, one commit of all of them, exit 0.
    A restart resumes after the committed offsets: nothing read twice."""
    feeds = [realtime(age="1h", idle="1h")]
    daemon = rig.start("a", feeds)
    sandbox.generate(250)
    want = truth_count(sandbox)
    wait_for(lambda: query(daemon)["pending_rows"] == want, 30, "every row delivered")
    running = query(daemon)
    assert running["state"] == "running" and running["commits"] == 0
    assert rig.committed("tx") == 0  # the empty document the feed starts with
    assert running_queries(sandbox) == 1
    assert daemon.stop() == 0
    assert requests.closed().count(running["query_id"]) == 1
    assert running_queries(sandbox) == 0
    events = rig.events(daemon)
    commits = [e for e in events if e["event"] == "realtime.committed"]
    assert [c["rows"] for c in commits] == [want]
    assert not [e for e in events if e["event"] in ("realtime.drain_timeout",
                                                   "realtime.close_query_failed")]
    no_errors(events)
    doc = rig.metadata("tx")
    assert doc is not None and doc["total_records"] == want
    # The committed offsets are the last offset of each partition (ground truth).
    last: dict[str, int] = {}
    for row in sandbox.rows(SOURCE):
        last[str(row["ROWPARTITION"])] = max(last.get(str(row["ROWPARTITION"]), -1),
                                             row["ROWOFFSET"])
    assert doc["offsets"]["partitions"] == last
    rig.check_parquet("tx")

    again = rig.start("a2", feeds)
    # Quiet source, nothing committed by this process yet: the lag is the lake's, now - the
    # newest ROWTIME committed (by whoever committed it), and it is there at once.
    wait_for(lambda: query(again)["state"] == "running", 30, "the query after the restart")
    newest_s = max(r["ROWTIME"] for r in sandbox.rows(SOURCE)) / 1000
    lag = value(again.scrape(), "lakeexportd_realtime_lag_seconds", feed="tx")
    assert lag is not None and abs(lag - (time.time() - newest_s)) < 2.0, lag
    sandbox.generate(120)
    wait_for(lambda: query(again)["pending_rows"] == 120, 30, "the new rows delivered")
    assert again.stop() == 0
    started = [e for e in rig.events(again) if e["event"] == "realtime.query_started"]
    assert started[0]["partitions"] == last  # after the committed offsets
    assert [e["rows"] for e in rig.events(again) if e["event"] == "realtime.committed"] == [120]
    assert rig.check_parquet("tx") == truth_count(sandbox)


# -- SIGHUP ------------------------------------------------------------------------------------

def test_reloads_change_add_and_switch_realtime_feeds_without_losing_a_row(
    rig: Rig, sandbox: Sandbox, requests: Requests,
) -> None:
    """Rows keep coming (a thread generates them) through three reloads: rotate changed
    (the query closed, committed and started again), a second realtime feed added and
    ``defaults.schedule`` changed (the first feed's query untouched), the first switched to
    batch with a schedule. Each feed holds every row once."""
    daemon = rig.start("hup", [realtime(age="1s", idle="300ms")])
    stop = threading.Event()

    def produce() -> None:
        while not stop.wait(0.05):
            sandbox.generate(7)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        wait_for(lambda: query(daemon)["commits"] >= 2, 30, "commits of the first query")
        first = query(daemon)["query_id"]

        rig.reload(daemon, "hup", [realtime(rows=40, age="2s", idle="200ms")])
        second = wait_for(lambda: (q := query(daemon))["state"] == "running"
                          and q["query_id"] != first and q["query_id"], 30, "a new query")
        assert first in requests.closed()
        wait_for(lambda: query(daemon)["commits"] >= 2, 30, "commits after the change")

        # tx2 added, and defaults.schedule changed, which a realtime feed does not use.
        rig.reload(daemon, "hup", [realtime(rows=40, age="2s", idle="200ms"),
                                   realtime("tx2", age="1s", idle="300ms")], every="2s")
        wait_for(lambda: query(daemon, "tx2")["commits"] >= 2, 30, "commits of tx2")
        assert query(daemon)["query_id"] == second, "tx was restarted by adding tx2"
        assert second not in requests.closed()

        rig.reload(daemon, "hup", [
            {"name": "tx", "source": SOURCE, "kind": "stream", "schedule": {"every": "1s"},
             "settle_delay": "1s"},
            realtime("tx2", age="1s", idle="300ms")])
        assert second in requests.closed()
        daemon.wait_runs("tx", 2)
    finally:
        stop.set()
        producer.join()
    newest = max(r["ROWTIME"] for r in sandbox.rows(SOURCE))
    wait_for(lambda: (rig.metadata("tx") or {}).get("watermark", {}).get("rowtime_ms", 0)
             >= newest, 30, "a batch run past the newest row")
    rig.wait_committed("tx2")
    assert daemon.stop() == 0
    tx = rig.metadata("tx")
    assert tx is not None and tx.get("offsets") is None, "a batch run keeps no offsets"
    no_errors(rig.events(daemon))
    total = truth_count(sandbox)
    assert rig.check_parquet("tx") == total
    assert rig.check_parquet("tx2") == total


# -- /status, /metrics, a standby -------------------------------------------------------------

def test_status_and_metrics_show_the_query_and_a_standby_on_the_same_lake(
    rig: Rig, sandbox: Sandbox,
) -> None:
    """The holder: running, its query id the sandbox's running query, lag = now - the
    newest ROWTIME. A second daemon with the same config: standby, no lag; it takes the feed
    over when the holder stops."""
    feeds = [realtime(age="1s", idle="200ms")]
    holder = rig.start("one", feeds)
    wait_for(lambda: query(holder)["state"] == "running", 30, "the holder's query running")
    standby = rig.start("two", feeds)
    wait_for(lambda: query(standby)["state"] == "standby", 30, "the second daemon standing by")

    sandbox.generate(200)
    rig.wait_committed("tx")
    newest_s = max(r["ROWTIME"] for r in sandbox.rows(SOURCE)) / 1000
    shown = holder.get("/status").json()["feeds"]["tx"]
    q = shown["query"]
    assert (shown["mode"], shown["running"], shown["held_elsewhere"]) == ("realtime", True, False)
    assert q["state"] == "running" and q["error"] is None and q["pending_rows"] == 0
    assert q["rows"] == truth_count(sandbox) and q["newest_rowtime_ms"] == newest_s * 1000
    assert list(sandbox.app.queries) == [q["query_id"]]
    samples = holder.scrape()
    assert state_gauge(holder) == "running"
    assert value(samples, "lakeexportd_realtime_commits_total", feed="tx") == q["commits"] >= 1
    assert value(samples, "lakeexportd_realtime_reconnects_total", feed="tx") == 0
    lag = value(samples, "lakeexportd_realtime_lag_seconds", feed="tx")
    assert lag is not None and 0 <= lag < 30
    assert abs(lag - (time.time() - newest_s)) < 2.0, (lag, time.time() - newest_s)
    assert value(samples, "lakeexportd_rows_written_total", feed="tx") == truth_count(sandbox)

    # `lakeexportd status` asks both daemons: realtime, the holder's query running, and
    # the other standing by
    status = subprocess.run(
        [str(LAKEEXPORTD), "status", "--json", "-c", str(rig.tmp / "one/lakeexportd.yaml")],
        capture_output=True, text=True, env={**os.environ, **rig.env}, timeout=60, check=True)
    row = next(r for r in json.loads(status.stdout)["feeds"] if r["feed"] == "tx")
    assert row["mode"] == "realtime" and row["running"]
    assert row["standby"] == [standby.proc.pid]
    assert {q["state"] for q in row["queries"].values()} == {"running", "standby"}
    text = subprocess.run(
        [str(LAKEEXPORTD), "status", "-c", str(rig.tmp / "one/lakeexportd.yaml")],
        capture_output=True, text=True, env={**os.environ, **rig.env}, timeout=60, check=True)
    line = next(li for li in text.stdout.splitlines() if li.startswith("tx "))
    assert line.split()[-2:] == ["realtime", "running"], line

    # /readyz: ready, and each realtime query's state
    assert holder.get("/readyz").text == "ready\nrealtime tx: running\n"
    assert standby.get("/readyz").text == "ready\nrealtime tx: standby\n"

    other = standby.get("/status").json()["feeds"]["tx"]
    assert (other["running"], other["held_elsewhere"]) == (False, True)
    assert other["query"]["query_id"] is None and other["query"]["lag_s"] is None
    assert state_gauge(standby) == "standby"
    assert value(standby.scrape(), "lakeexportd_realtime_lag_seconds", feed="tx") is None
    assert value(standby.scrape(), "lakeexportd_realtime_commits_total", feed="tx") == 0

    # The lag grows while the source is quiet.
    wait_for(lambda: (value(holder.scrape(), "lakeexportd_realtime_lag_seconds", feed="tx")
                      or 0) >= lag + 1, 10, "the lag growing while idle")

    assert holder.stop() == 0
    wait_for(lambda: query(standby)["state"] == "running", STANDBY_RETRY + LOCK_WAIT + 15,
             "the standby taking the feed over")
    sandbox.generate(100)
    rig.wait_committed("tx")
    assert state_gauge(standby) == "running"
    assert standby.stop() == 0
    for daemon in (holder, standby):
        no_errors(rig.events(daemon))
    rig.check_parquet("tx")


# -- object stores -------------------------------------------------------------------------------

@pytest.fixture
def s3_rig(tmp_path: Path, sandbox: Sandbox, s3_bucket: Bucket) -> Iterator[Rig]:
    r = Rig(tmp_path, sandbox, s3_bucket)
    yield r
    r.close()


@pytest.fixture
def azure_rig(tmp_path: Path, sandbox: Sandbox, azure_container: Bucket) -> Iterator[Rig]:
    r = Rig(tmp_path, sandbox, azure_container)
    yield r
    r.close()


def holder_pid(rig: Rig, feed: str = "tx") -> int | None:
    assert rig.bucket is not None
    lease = lease_owner(rig.bucket, "lake", "stream", feed)
    if lease is None or lease["released"]:
        return None
    return int(lease["owner"].split(":")[-2])


def test_a_standby_takes_a_realtime_feed_over_after_kill_9_on_s3(
    s3_rig: Rig, sandbox: Sandbox,
) -> None:
    """Two daemons, one config, an S3 lake with a 3 s lease: the holder runs the query (its
    lease renewed: the standby stays standby past several ttls), commits, then is killed with
    rows delivered and not committed; the standby takes the lease once the ttl ran out,
    starts after the committed offsets, and every row is in the lake once."""
    rig = s3_rig
    base = truth_count(sandbox)
    # A rotation every 50 rows (age and idle never): what is committed is under control.
    feeds = [realtime(rows=base + 50, age="1h", idle="1h")]
    first = rig.start("a", feeds)
    wait_for(lambda: query(first)["state"] == "running", 30, "the first daemon's query")
    second = rig.start("b", feeds)
    wait_for(lambda: query(second)["state"] == "standby", 30, "the second daemon standing by")
    standing = time.monotonic()

    sandbox.generate(50)
    wait_for(lambda: rig.committed("tx") == base + 50, 30, "the first rotation")
    sandbox.generate(30)
    wait_for(lambda: query(first)["pending_rows"] == 30, 30, "30 rows delivered")
    # The holder renews its lease while its query runs: for two ttls and more the standby
    # finds it held (observed, not slept on: each look must hold).
    while time.monotonic() - standing < 2 * TTL + 1:
        assert holder_pid(rig) == first.proc.pid
        assert query(second)["state"] == "standby"
        time.sleep(0.2)
    os.killpg(first.proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    first.proc.wait(10)
    assert rig.committed("tx") == base + 50  # the 30 delivered rows died uncommitted

    wait_for(lambda: query(second)["state"] == "running",
             TTL + STANDBY_RETRY + LOCK_WAIT + 10, "the standby taking the feed over")
    took = time.monotonic() - killed
    print(f"\nrealtime takeover after kill -9: {took:.1f}s (lease_ttl {TTL:g}s, standby retry "
          f"{STANDBY_RETRY:g}s, lock_wait {LOCK_WAIT:g}s)")
    assert took > TTL * 2 / 3 - 0.5, "the lease was taken while still good"
    assert holder_pid(rig) == second.proc.pid
    # Its lag is the lake's at once: now - the newest ROWTIME the killed holder committed.
    committed_s = max(r["ROWTIME"] for r in sandbox.rows(SOURCE)[:base + 50]) / 1000
    lag = value(second.scrape(), "lakeexportd_realtime_lag_seconds", feed="tx")
    assert lag is not None and abs(lag - (time.time() - committed_s)) < 2.0, lag
    taken = [e for e in rig.events(second) if e["event"] == "realtime.lock_acquired"]
    assert len(taken) == 1 and taken[0]["previous_owner"]
    assert f":{first.proc.pid}:" in taken[0]["previous_owner"]
    started_at = [e for e in rig.events(second) if e["event"] == "realtime.query_started"]
    assert sum(started_at[0]["partitions"].values()) + len(started_at[0]["partitions"]) == \
        base + 50, "the standby did not start after the committed offsets"

    sandbox.generate(40)  # with the 30: one more rotation of base + 50 is not reached
    wait_for(lambda: query(second)["pending_rows"] == 70, 30, "the rows after the takeover")
    assert second.stop() == 0
    assert rig.committed("tx") == truth_count(sandbox)
    no_errors(rig.events(second))
    rig.check_parquet("tx")


def test_realtime_delta_on_s3_holds_every_row_once(s3_rig: Rig, sandbox: Sandbox) -> None:
    """A realtime Delta feed on S3, read with delta-rs: each row once, the log's files are
    the summary's, the feed's offsets are transactions of the log."""
    rig = s3_rig
    feed = {**realtime(age="1s", idle="200ms"), "format": "delta"}
    daemon = rig.start("delta", [feed])
    sandbox.generate(150)
    rig.wait_committed("tx")
    sandbox.generate(150)
    rig.wait_committed("tx")
    assert daemon.stop() == 0
    no_errors(rig.events(daemon))
    place = Place(root=rig.root, bucket=rig.bucket, options=rig.options)
    table = check_feed(place, "stream", "tx", sandbox.arrow(SOURCE))
    last: dict[int, int] = {}
    for row in sandbox.rows(SOURCE):
        last[row["ROWPARTITION"]] = max(last.get(row["ROWPARTITION"], -1), row["ROWOFFSET"])
    for partition, offset in last.items():
        assert table.transaction_version(f"lakeexportd:tx#partition-{partition}") == offset


def test_realtime_parquet_on_azurite_holds_every_row_once(
    azure_rig: Rig, sandbox: Sandbox,
) -> None:
    """A realtime Parquet feed on Azure Blob (Azurite), read with pyarrow: each row once."""
    rig = azure_rig
    daemon = rig.start("azure", [realtime(age="1s", idle="200ms")])
    sandbox.generate(150)
    rig.wait_committed("tx")
    sandbox.generate(150)
    rig.wait_committed("tx")
    assert daemon.stop() == 0
    no_errors(rig.events(daemon))
    rig.check_parquet("tx")
