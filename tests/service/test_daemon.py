from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from objectstores import Bucket
from scrape import value

from lakeexportd.config.load import load_config
from lakeexportd.config.model import Config, Feed, Schedule
from lakeexportd.errors import (
    ExportAborted,
    FeedLocked,
    KsqlDBUnavailable,
    RejectedValueError,
    SchemaError,
)
from lakeexportd.export.exporter import ExportResult, epoch_ms
from lakeexportd.feeds.manager import FeedManager
from lakeexportd.ksqldb.retry import RequestObserver
from lakeexportd.lake import layout
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import (
    ExportRecord,
    FileEntry,
    StreamMetadata,
    TableMetadata,
    Version,
)
from lakeexportd.service.daemon import Daemon
from lakeexportd.service.sdnotify import Notifier

NOW = dt.datetime(2025, 1, 15, 14, 30, tzinfo=dt.UTC)
YEARLY = {"cron": "0 0 1 1 *"}  # never fires during a test: runs are started by hand


@dataclass
class Call:
    feed: Feed
    now: dt.datetime
    done: threading.Event = field(default_factory=threading.Event)
    outcome: str = "running"
    run_id: str | None = None


class FakeExporter:
    """Records every export; a feed can be held at a gate, or made to fail."""

    def __init__(self, name: str = "exporter") -> None:
        self.name = name
        self.calls: list[Call] = []
        self.gates: dict[str, threading.Event] = {}
        self.failures: dict[str, Exception] = {}
        self.started = threading.Condition()

    def export(self, feed: Feed, now: dt.datetime, *, cancel: threading.Event | None = None,
               progress: Any = None, run_id: str | None = None) -> ExportResult:
        call = Call(feed, now)
        call.run_id = run_id
        with self.started:
            self.calls.append(call)
            self.started.notify_all()
        try:
            gate = self.gates.get(feed.name)
            while gate is not None and not gate.wait(0.01):
                if cancel is not None and cancel.is_set():
                    raise ExportAborted(f"feed {feed.name!r}: stopped by shutdown")
            if feed.name in self.failures:
                raise self.failures[feed.name]
        except Exception as exc:
            call.outcome = type(exc).__name__
            raise
        finally:
            call.done.set()
        call.outcome = "success"
        stream = feed.kind == "stream"
        return ExportResult(
            feed=feed.name, kind=feed.kind, run_id=run_id or "exp-run", rows=10, files=1, bytes=1000,
            started=now, duration_s=0.01,
            watermark_ms=epoch_ms(now) - 30_000 if stream else None,
            version=None if stream else 1, versions_kept=None if stream else 1,
            scan_started_ms=None if stream else epoch_ms(now),
        )

    def wait_calls(self, count: int, timeout: float = 5) -> list[Call]:
        with self.started:
            assert self.started.wait_for(lambda: len(self.calls) >= count, timeout), self.calls
            return list(self.calls)


class Backends:
    """The exporter factory: builds a FakeExporter per config and records closes."""

    def __init__(self) -> None:
        self.built: list[FakeExporter] = []
        self.closed: list[str] = []

    def __call__(self, config: Config,
                 observer: RequestObserver) -> tuple[FakeExporter, Callable[[], None]]:
        exporter = FakeExporter(f"exporter{len(self.built)}")
        self.built.append(exporter)
        return exporter, lambda: self.closed.append(exporter.name)

    @property
    def current(self) -> FakeExporter:
        return self.built[-1]


def feed(name: str, kind: str = "stream", **extra: Any) -> dict[str, Any]:
    return {"name": name, "source": name.upper(), "kind": kind, "schedule": YEARLY, **extra}


class Files:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "lakeexportd.yaml"
        self.root = tmp_path / "lake"

    def write(self, feeds: list[dict[str, Any]], **sections: Any) -> Path:
        data = {
            "ksqldb": {"url": "http://127.0.0.1:1"}, "lake": {"root": str(self.root)},
            "scheduler": {"workers": 2, "stop_grace": "1s"}, **sections, "feeds": feeds,
        }
        self.path.write_text(yaml.safe_dump(data))
        return self.path

    def load(self) -> Config:
        return load_config(self.path)


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


@pytest.fixture
def backends() -> Backends:
    return Backends()


@pytest.fixture
def make_daemon(files: Files, backends: Backends) -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def make(feeds: list[dict[str, Any]] | None = None, *, start: bool = True,
             **kwargs: Any) -> Daemon:
        if feeds is not None:
            files.write(feeds)
        daemon = Daemon(files.load(), clock=lambda: NOW, exporter_factory=backends,
                        serve_metrics=False, **kwargs)
        made.append(daemon)
        if start:
            daemon.start()
        return daemon

    yield make
    for daemon in made:
        for gate in [g for b in backends.built for g in b.gates.values()]:
            gate.set()
        daemon.stop()


def job_feed(daemon: Daemon, name: str) -> Feed:
    job = daemon.scheduler.get_job(name)
    assert job is not None
    feed: Feed = job.args[0]
    return feed


def in_thread(fn: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


# -- scheduling ------------------------------------------------------------------------------


def test_start_schedules_one_job_per_enabled_feed(make_daemon: Callable[..., Daemon]) -> None:
    """Enabled feeds get a job (max_instances=1, coalesce); a disabled one gets none."""
    daemon = make_daemon([feed("orders"), feed("users", "table"),
                          feed("old", enabled=False)])
    jobs = {job.id: job for job in daemon.scheduler.get_jobs() if ":" not in job.id}
    assert sorted(jobs) == ["orders", "users"]
    assert daemon.scheduler.get_job("compact:orders") and not daemon.scheduler.get_job(
        "compact:users")  # streams compact daily by default; tables never
    assert all(job.max_instances == 1 and job.coalesce for job in jobs.values())
    assert value(daemon.metrics.registry, "lakeexportd_feeds", state="active") == 2
    assert value(daemon.metrics.registry, "lakeexportd_feeds", state="disabled") == 1
    assert daemon.is_ready()


def test_interval_feed_runs_at_once_then_every_period(
    make_daemon: Callable[..., Daemon], backends: Backends
) -> None:
    """An `every` feed runs right after start, on an IntervalTrigger with one period of grace."""
    daemon = make_daemon([feed("orders", schedule={"every": "1h"})])
    job = daemon.scheduler.get_job("orders")
    assert isinstance(job.trigger, IntervalTrigger)
    assert job.trigger.interval == dt.timedelta(hours=1)
    assert job.misfire_grace_time == 3600
    (call,) = backends.current.wait_calls(1)
    assert call.now == NOW  # the injected clock, read once per run


def test_cron_feed_uses_a_utc_cron_trigger(make_daemon: Callable[..., Daemon]) -> None:
    """A cron schedule becomes a CronTrigger in UTC and does not run at start."""
    daemon = make_daemon([feed("orders", schedule={"cron": "15 3 * * mon"})])
    trigger = daemon.scheduler.get_job("orders").trigger
    assert isinstance(trigger, CronTrigger) and str(trigger.timezone) == "UTC"
    nxt = trigger.get_next_fire_time(None, NOW)
    assert (nxt.weekday(), nxt.hour, nxt.minute) == (0, 3, 15)


def test_a_cron_that_never_fires_is_a_warning_and_other_feeds_run(
    make_daemon: Callable[..., Daemon]
) -> None:
    """`0 0 31 2 *` matches no date: the daemon says so for that feed and keeps the others."""
    with structlog.testing.capture_logs() as logs:
        daemon = make_daemon([feed("orders", schedule={"cron": "0 0 31 2 *"}), feed("users")])
    (warning,) = [e for e in logs if e["event"] == "feed.never_runs"]
    assert warning["feed"] == "orders"
    assert daemon.scheduler.get_job("users") is not None and daemon.is_ready()


def test_a_feed_that_cannot_be_scheduled_fails_alone(
    make_daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error scheduling one feed fails that feed (logged), never the daemon."""
    from lakeexportd.service import scheduling

    real = scheduling.trigger_for

    def trigger_for(f: Feed, jitter: float) -> Any:
        if f.name == "orders":
            raise OverflowError("date value out of range")
        return real(f, jitter)

    monkeypatch.setattr(scheduling, "trigger_for", trigger_for)
    with structlog.testing.capture_logs() as logs:
        daemon = make_daemon([feed("orders"), feed("users")])
    (failed,) = [e for e in logs if e["event"] == "feed.schedule_failed"]
    assert failed["feed"] == "orders" and "OverflowError" in failed["reason"]
    assert daemon.scheduler.get_job("orders") is None
    assert daemon.scheduler.get_job("users") is not None and daemon.is_ready()


def test_jitter_is_passed_to_triggers(make_daemon: Callable[..., Daemon], files: Files) -> None:
    """scheduler.jitter reaches interval and cron triggers."""
    files.write([feed("orders", schedule={"every": "1h"}), feed("users")],
                scheduler={"workers": 2, "jitter": "7s"})
    daemon = make_daemon()
    assert daemon.scheduler.get_job("orders").trigger.jitter == 7
    assert daemon.scheduler.get_job("users").trigger.jitter == 7


# -- one run ---------------------------------------------------------------------------------


def test_a_successful_run_updates_metrics(
    make_daemon: Callable[..., Daemon], backends: Backends
) -> None:
    """A run counts success, rows, bytes, duration, last success and lag from the watermark."""
    daemon = make_daemon([feed("orders")])
    with structlog.testing.capture_logs() as logs:
        assert daemon.run_feed(job_feed(daemon, "orders")) == "success"
    reg = daemon.metrics.registry
    assert value(reg, "lakeexportd_export_runs_total", feed="orders", result="success") == 1
    assert value(reg, "lakeexportd_rows_written_total", feed="orders") == 10
    assert value(reg, "lakeexportd_bytes_written_total", feed="orders") == 1000
    assert value(reg, "lakeexportd_lag_seconds", feed="orders") == 30
    assert value(reg, "lakeexportd_last_success_timestamp_seconds",
                 feed="orders") == NOW.timestamp()
    (line,) = [e for e in logs if e["event"].startswith("export.")]
    assert line["event"] == "export.finished"
    assert {k: line[k] for k in ("feed", "rows", "files", "bytes")} == {
        "feed": "orders", "rows": 10, "files": 1, "bytes": 1000}
    assert line["run_id"] and "duration_s" in line
    assert line["run_id"] == backends.current.calls[-1].run_id  # the id _metadata.json records


@pytest.mark.parametrize(("error", "result"), [
    (FeedLocked("held by pid 1"), "skipped"),
    (ExportAborted("shutdown"), "aborted"),
    (KsqlDBUnavailable("connection refused"), "transient"),
    (SchemaError("column X changed type"), "failed"),
    (RejectedValueError(column="W", ksql_type="DECIMAL(4, 2)", value="1.234", reason="no",
                        row=1, rowtime=5, feed="orders"), "failed"),
    (RuntimeError("a bug"), "failed"),
])
def test_failures_are_classified_and_logged_once(
    make_daemon: Callable[..., Daemon], backends: Backends, error: Exception, result: str
) -> None:
    """Each exception maps to its result label and exactly one export.failed line."""
    daemon = make_daemon([feed("orders")])
    backends.current.failures["orders"] = error
    with structlog.testing.capture_logs() as logs:
        assert daemon.run_feed(job_feed(daemon, "orders")) == result
    assert value(daemon.metrics.registry, "lakeexportd_export_runs_total",
                 feed="orders", result=result) == 1
    (line,) = [e for e in logs if e["event"].startswith("export.")]
    assert line["event"] == "export.failed" and line["result"] == result
    assert line["error"] == str(error) and line["feed"] == "orders" and line["run_id"]
    assert line["run_id"] == backends.current.calls[-1].run_id
    assert {line[k] for k in ("rows", "files", "bytes")} == {0}


def test_start_reads_lag_and_last_success_from_metadata(
    make_daemon: Callable[..., Daemon], files: Files
) -> None:
    """Before any run, lag, last success and versions come from each feed's _metadata.json."""
    store = MetadataStore()
    ok = ExportRecord("r1", "2025-01-15T14:00:00Z", "2025-01-15T14:00:05Z", 3, "success")
    failed = ExportRecord("r2", "2025-01-15T14:10:00Z", "2025-01-15T14:10:01Z", 0, "failed")
    stream_dir = layout.feed_dir(files.root, "stream", "orders")
    table_dir = layout.feed_dir(files.root, "table", "users")
    for directory in (stream_dir, table_dir):
        directory.mkdir(parents=True)
        store.load(directory)
    store.commit(stream_dir, StreamMetadata(
        feed="orders", source="ORDERS", exports=(ok, failed),
        watermark_ms=epoch_ms(NOW) - 600_000))
    store.commit(table_dir, TableMetadata(
        feed="users", source="USERS", exports=(ok,), current_version=2, last_version=2,
        versions=(Version(1, "2025-01-15T13:00:00Z", (FileEntry("snapshot_20250115_130000.parquet", 1, 1),)),
                  Version(2, "2025-01-15T14:00:00Z", (FileEntry("snapshot_20250115_140000.parquet", 1, 1),)))))
    daemon = make_daemon([feed("orders"), feed("users", "table")])
    reg = daemon.metrics.registry
    assert value(reg, "lakeexportd_lag_seconds", feed="orders") == 600
    assert value(reg, "lakeexportd_lag_seconds", feed="users") == 1800
    assert value(reg, "lakeexportd_table_versions", feed="users") == 2
    assert value(reg, "lakeexportd_last_success_timestamp_seconds", feed="orders") == (
        dt.datetime(2025, 1, 15, 14, 0, 5, tzinfo=dt.UTC).timestamp())


# -- reload ----------------------------------------------------------------------------------


def test_reload_adds_reschedules_and_removes_only_changed_feeds(
    make_daemon: Callable[..., Daemon], files: Files
) -> None:
    """SIGHUP's reload: a new feed is added, a changed one replaced, a gone one removed."""
    daemon = make_daemon([feed("keep"), feed("change"), feed("gone")])
    kept_job = daemon.scheduler.get_job("keep")
    files.write([feed("keep"), feed("change", batch_size=5), feed("new", "table")])
    with structlog.testing.capture_logs() as logs:
        assert daemon.reload()
    assert sorted(job.id for job in daemon.scheduler.get_jobs()
                  if ":" not in job.id) == ["change", "keep", "new"]
    assert daemon.scheduler.get_job("keep").trigger is kept_job.trigger  # untouched
    assert job_feed(daemon, "change").batch_size == 5
    events = {(e["event"], e.get("feed")) for e in logs}
    assert {("feed.added", "new"), ("feed.rescheduled", "change"),
            ("feed.removed", "gone")} <= events
    assert ("feed.rescheduled", "keep") not in events
    reg = daemon.metrics.registry
    assert value(reg, "lakeexportd_config_reloads_total", result="success") == 1
    assert value(reg, "lakeexportd_export_runs_total", feed="new", result="success") == 0
    assert value(reg, "lakeexportd_export_runs_total", feed="gone", result="success") is None


def test_a_feed_added_by_reload_runs_at_once_even_while_the_reload_is_finishing(
    make_daemon: Callable[..., Daemon], files: Files, backends: Backends,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The added feed's first run, started while reload() is still busy, sees the new config
    (it used to be skipped as "disabled or archived in the registry")."""
    from lakeexportd.service import runs

    daemon = make_daemon([feed("orders")])
    decided = threading.Event()
    real_seed = runs.seed_from_metadata

    def slow_seed(*args: Any, **kwargs: Any) -> None:
        # Hold reload() here, after the job is scheduled, until its first run has decided.
        decided.wait(5)
        real_seed(*args, **kwargs)

    monkeypatch.setattr(runs, "seed_from_metadata", slow_seed)
    real_still_active = daemon._still_active

    def watched(f: Feed) -> bool:
        try:
            return real_still_active(f)
        finally:
            decided.set()

    monkeypatch.setattr(daemon, "_still_active", watched)
    files.write([feed("orders"), feed("fresh", schedule={"every": "1h"})])
    with structlog.testing.capture_logs() as logs:
        assert daemon.reload()
        calls = backends.current.wait_calls(1)
    assert [c.feed.name for c in calls] == ["fresh"]
    assert not [e for e in logs if e["event"] == "feed.skipped"]


def test_an_invalid_file_on_reload_keeps_the_old_feeds(
    make_daemon: Callable[..., Daemon], files: Files
) -> None:
    """A broken file: old jobs stay, config.reload_failed says why, the error is counted."""
    daemon = make_daemon([feed("orders"), feed("users")])
    files.path.write_text("feeds: [unclosed\n")
    with structlog.testing.capture_logs() as logs:
        assert not daemon.reload()
    assert sorted(job.id for job in daemon.scheduler.get_jobs()
                  if ":" not in job.id) == ["orders", "users"]
    (failed,) = [e for e in logs if e["event"] == "config.reload_failed"]
    assert str(files.path) in failed["reason"]
    assert value(daemon.metrics.registry, "lakeexportd_config_reloads_total",
                 result="error") == 1
    assert daemon.config.feed("orders").source == "ORDERS"
    assert daemon.is_ready()


def test_a_running_export_keeps_its_feed_across_a_reschedule(
    make_daemon: Callable[..., Daemon], backends: Backends, files: Files
) -> None:
    """A reload while a feed exports replaces the job but the run finishes with its old Feed."""
    daemon = make_daemon([feed("orders")])
    gate = backends.current.gates["orders"] = threading.Event()
    in_thread(lambda: daemon.run_feed(job_feed(daemon, "orders")))
    backends.current.wait_calls(1)
    files.write([feed("orders", batch_size=7)])
    assert daemon.reload()
    assert job_feed(daemon, "orders").batch_size == 7
    gate.set()
    (call,) = backends.current.calls
    assert call.done.wait(5) and call.outcome == "success"
    assert call.feed.batch_size == 10_000  # the frozen Feed the run started with


def test_a_removed_feeds_running_export_finishes(
    make_daemon: Callable[..., Daemon], backends: Backends, files: Files
) -> None:
    """Removing a feed mid-run does not interrupt it, and its series do not come back."""
    daemon = make_daemon([feed("orders"), feed("users")])
    gate = backends.current.gates["orders"] = threading.Event()
    thread = in_thread(lambda: daemon.run_feed(job_feed(daemon, "orders")))
    backends.current.wait_calls(1)
    files.write([feed("users")])
    assert daemon.reload()
    assert daemon.scheduler.get_job("orders") is None
    gate.set()
    thread.join(5)
    assert backends.current.calls[0].outcome == "success"
    assert value(daemon.metrics.registry, "lakeexportd_export_runs_total",
                 feed="orders", result="success") is None


def test_a_ksqldb_change_builds_a_new_exporter_for_later_runs(
    make_daemon: Callable[..., Daemon], backends: Backends, files: Files
) -> None:
    """A changed ksqldb section: new runs use a new exporter; the old closes after its run."""
    daemon = make_daemon([feed("orders")])
    old = backends.current
    gate = old.gates["orders"] = threading.Event()
    thread = in_thread(lambda: daemon.run_feed(job_feed(daemon, "orders")))
    old.wait_calls(1)
    files.write([feed("orders")], ksqldb={"url": "http://127.0.0.1:2"})
    assert daemon.reload()
    assert len(backends.built) == 2 and backends.closed == []  # still in use
    gate.set()
    thread.join(5)
    assert backends.closed == [old.name]
    daemon.run_feed(job_feed(daemon, "orders"))
    assert len(backends.current.calls) == 1


def test_a_feed_only_reload_keeps_the_exporter(
    make_daemon: Callable[..., Daemon], backends: Backends, files: Files
) -> None:
    """Changing feeds alone keeps the ksqlDB client (and its connections)."""
    daemon = make_daemon([feed("orders")])
    files.write([feed("orders"), feed("users")])
    assert daemon.reload()
    assert len(backends.built) == 1 and backends.closed == []


# -- stop ------------------------------------------------------------------------------------


def test_stop_lets_running_exports_finish_within_grace(
    make_daemon: Callable[..., Daemon], backends: Backends
) -> None:
    """stop() waits for a run that ends within stop_grace; it publishes (success)."""
    daemon = make_daemon([feed("orders")])
    gate = backends.current.gates["orders"] = threading.Event()
    in_thread(lambda: daemon.run_feed(job_feed(daemon, "orders")))
    backends.current.wait_calls(1)
    threading.Timer(0.3, gate.set).start()
    daemon.stop()
    assert backends.current.calls[0].outcome == "success"
    assert not daemon.cancel.is_set()
    assert not daemon.is_ready() and not daemon.scheduler.running
    assert backends.closed == [backends.current.name]


def test_stop_aborts_exports_still_running_after_grace(
    make_daemon: Callable[..., Daemon], backends: Backends
) -> None:
    """Past stop_grace the cancel event is set and the run aborts without publishing."""
    daemon = make_daemon([feed("orders")])
    backends.current.gates["orders"] = threading.Event()  # never opened
    in_thread(lambda: daemon.run_feed(job_feed(daemon, "orders")))
    backends.current.wait_calls(1)
    started = time.monotonic()
    daemon.stop()
    assert 0.9 <= time.monotonic() - started < 5  # stop_grace is 1s
    assert daemon.cancel.is_set()
    assert backends.current.calls[0].outcome == "ExportAborted"


def test_no_run_starts_after_stop(make_daemon: Callable[..., Daemon],
                                  backends: Backends) -> None:
    """A job the pool picks up after stop() returns without exporting."""
    daemon = make_daemon([feed("orders")])
    daemon.stop()
    assert daemon.run_feed(job_feed_from_config(daemon, "orders")) is None
    assert backends.current.calls == []


def job_feed_from_config(daemon: Daemon, name: str) -> Feed:
    return daemon.config.feed(name)


# -- main loop, signals, systemd -------------------------------------------------------------


def test_run_loop_reloads_on_sighup_and_stops_on_sigterm(
    make_daemon: Callable[..., Daemon], files: Files
) -> None:
    """Real signals: handlers only enqueue; the main loop reloads, then stops and returns 0."""
    daemon = make_daemon([feed("orders")], start=False)
    files.write([feed("orders"), feed("users")])

    def send() -> None:
        deadline = time.monotonic() + 5
        while not daemon.is_ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 5
        while daemon.scheduler.get_job("users") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    in_thread(send)
    assert daemon.run() == 0
    assert sorted(daemon.feeds) == ["orders", "users"]
    assert daemon.state == "stopped"
    assert signal.getsignal(signal.SIGTERM) is previous


def test_daemon_tells_systemd_ready_reloading_and_stopping(
    make_daemon: Callable[..., Daemon], files: Files, tmp_path: Path
) -> None:
    """start sends READY=1, reload RELOADING=1 then READY=1, stop STOPPING=1."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        daemon = make_daemon([feed("orders")], notifier=Notifier(str(path)))
        daemon.reload()
        daemon.stop()
        got = [sock.recv(4096).decode().splitlines()[0] for _ in range(4)]
    assert got == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]


# -- the feed registry -------------------------------------------------------------------------


def registry(files: Files) -> FeedManager:
    return FeedManager(files.root, now=lambda: NOW)


def test_start_registers_the_yaml_feeds(make_daemon: Callable[..., Daemon], files: Files) -> None:
    """At start the YAML feeds are synced into feeds/active/, with origin config."""
    make_daemon([feed("orders"), feed("users", "table")])
    entries = {e.name: (e.origin, e.state) for e in registry(files).list()}
    assert entries == {"orders": ("config", "active"), "users": ("config", "active")}
    assert (files.root / "feeds/active/orders.json").exists()


def test_cli_disable_unschedules_and_enable_reschedules(
    make_daemon: Callable[..., Daemon], files: Files, backends: Backends
) -> None:
    """A feed disabled with the CLI skips its next run and leaves the scheduler; enable brings it back."""
    daemon = make_daemon([feed("orders"), feed("users", "table")])
    orders = job_feed(daemon, "orders")
    registry(files).disable("orders", reason="maintenance")
    assert daemon.run_feed(orders) is None  # re-read before the run: skipped
    assert backends.current.calls == []
    daemon.refresh()
    assert daemon.scheduler.get_job("orders") is None and "orders" not in daemon.feeds
    assert value(daemon.metrics.registry, "lakeexportd_feeds", state="disabled") == 1
    registry(files).enable("orders", reason="done")
    daemon.refresh()
    assert daemon.run_feed(job_feed(daemon, "orders")) == "success"


def test_cli_added_feed_is_scheduled_without_a_restart(
    make_daemon: Callable[..., Daemon], files: Files
) -> None:
    """A feed added with `lakeexportd feeds add` gets a job at the next registry re-read."""
    daemon = make_daemon([feed("orders")])
    added = Feed(name="extra", source="EXTRA", kind="stream", schedule=Schedule(cron="0 0 1 1 *"))
    registry(files).add(added, reason="ad hoc")
    daemon.refresh()
    assert job_feed(daemon, "extra").source == "EXTRA"
    assert value(daemon.metrics.registry, "lakeexportd_feeds", state="active") == 2


def test_feed_that_left_the_yaml_is_archived_on_reload(
    make_daemon: Callable[..., Daemon], files: Files
) -> None:
    """Removing a feed from the YAML archives it in the registry (its data is kept)."""
    daemon = make_daemon([feed("orders"), feed("users", "table")])
    files.write([feed("orders")])
    assert daemon.reload()
    assert registry(files).get("users").state == "archived"
    assert value(daemon.metrics.registry, "lakeexportd_feeds", state="archived") == 1


def test_reusing_an_archived_name_for_another_source_keeps_the_old_config(
    make_daemon: Callable[..., Daemon], files: Files
) -> None:
    """A reload that gives an archived feed's name another source is refused and counted."""
    daemon = make_daemon([feed("orders"), feed("users", "table")])
    files.write([feed("orders")])
    assert daemon.reload()
    files.write([feed("orders"), {**feed("users", "table"), "source": "OTHER"}])
    with structlog.testing.capture_logs() as logs:
        assert not daemon.reload()
    assert value(daemon.metrics.registry, "lakeexportd_config_reloads_total", result="error") == 1
    assert any(e["event"] == "config.reload_failed" for e in logs)
    assert sorted(daemon.feeds) == ["orders"]


def test_unreadable_registry_keeps_feeds_running(
    make_daemon: Callable[..., Daemon], files: Files
) -> None:
    """A registry file edited into invalid JSON is logged; scheduled feeds keep running."""
    daemon = make_daemon([feed("orders")])
    (files.root / "feeds/active/orders.json").write_text("{not json")
    with structlog.testing.capture_logs() as logs:
        daemon.refresh()
        assert daemon.run_feed(job_feed(daemon, "orders")) == "success"
    assert any(e["event"] == "feed.registry_unreadable" for e in logs)


def test_a_rejected_value_fails_the_feed_once_then_holds_it_until_it_changes(
    make_daemon: Callable[..., Daemon], backends: Backends
) -> None:
    """Rereading the same row cannot help: no run on every tick, a metric per feed and column;
    a changed definition (or the end of the hold) lets the feed run again."""
    import dataclasses

    from lakeexportd.service import runs

    clock = [1000.0]
    daemon = make_daemon([feed("orders"), feed("users")])
    daemon.holds = runs.Holds(hold_s=600, monotonic=lambda: clock[0])
    backends.current.failures["orders"] = RejectedValueError(
        column="AMOUNT", ksql_type="DECIMAL(4, 2)", value="1.234", row=3, rowtime=1700000000000,
        reason="1.234 does not fit in DECIMAL(4, 2) without rounding", feed="orders")
    orders = job_feed(daemon, "orders")
    with structlog.testing.capture_logs() as logs:
        assert daemon.run_feed(orders) == "failed"
        assert daemon.run_feed(orders) is None  # held: no run, no second failure
        assert daemon.run_feed(job_feed(daemon, "users")) == "success"  # others unaffected
    reg = daemon.metrics.registry
    assert value(reg, "lakeexportd_rejected_values_total", feed="orders", column="AMOUNT") == 1
    assert value(reg, "lakeexportd_export_runs_total", feed="orders", result="failed") == 1
    assert [c.feed.name for c in backends.current.calls] == ["orders", "users"]
    (failed,) = [e for e in logs if e["event"] == "export.failed"]
    assert failed["held_s"] == 600 and "ROWTIME 1700000000000" in failed["error"]
    assert "feed 'orders'" in failed["error"] and "1.234" in failed["error"]
    changed = dataclasses.replace(orders, batch_size=orders.batch_size + 1)
    assert daemon.run_feed(changed) == "failed"  # a new definition runs at once
    clock[0] += 601
    assert daemon.run_feed(changed) == "failed"  # and so does the same one after the hold
    assert len(backends.current.calls) == 4
    assert value(reg, "lakeexportd_rejected_values_total", feed="orders", column="AMOUNT") == 3
    daemon.metrics.remove_feed("orders")
    assert value(reg, "lakeexportd_rejected_values_total", feed="orders", column="AMOUNT") is None


def test_a_reload_onto_an_object_store_checks_its_conditional_writes_first(
    make_daemon: Callable[..., Daemon], files: Files, s3_bucket: Bucket, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGHUP onto a new object-store lake runs start's check: a store without conditional
    writes keeps the old lake and feeds (reload failed, counted); a real one is taken."""
    daemon = make_daemon([feed("orders")])
    options = {k: str(v) for k, v in s3_bucket.config.items() if k != "secret_access_key"}
    monkeypatch.setenv("LAKE_TEST_SECRET", str(s3_bucket.config["secret_access_key"]))
    options.update(allow_http="true", secret_access_key_env="LAKE_TEST_SECRET")
    careless = {**options, "conditional_put": "disabled"}
    logs_dir = {"dir": str(tmp_path / "logs")}
    files.write([feed("orders")], lake={"root": f"{s3_bucket.url}/lake", "storage": careless},
                logging=logs_dir)
    with structlog.testing.capture_logs() as logs:
        assert not daemon.reload()
    (failed,) = [e for e in logs if e["event"] == "config.reload_failed"]
    assert f"the lake store {s3_bucket.url}/lake cannot hold exactly-once" in failed["reason"]
    assert daemon.config.lake.root == files.root and daemon.config.lake.url is None
    assert [job.id for job in daemon.scheduler.get_jobs() if ":" not in job.id] == ["orders"]
    assert value(daemon.metrics.registry, "lakeexportd_config_reloads_total",
                 result="error") == 1
    files.write([feed("orders")], lake={"root": f"{s3_bucket.url}/lake", "storage": options},
                logging=logs_dir)
    assert daemon.reload()
    assert daemon.config.lake.url == f"{s3_bucket.url}/lake"
