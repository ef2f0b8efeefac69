from __future__ import annotations

import datetime as dt
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from lakeexportd.config.model import LoggingSettings, Secret
from lakeexportd.service import logs
from lakeexportd.service.logs import MonthlyFileHandler


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    logs.unconfigure()


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def this_month(kind: str) -> str:
    return logs.file_name(kind, dt.datetime.now(dt.UTC))


def test_events_are_routed_to_monthly_files_by_name(tmp_path: Path) -> None:
    """export.* go to export_YYYY_MM.log, metadata.* to metadata_, the rest to feed_."""
    logs.configure(LoggingSettings(dir=tmp_path), stderr=io.StringIO())
    log = structlog.get_logger("t")
    log.info("export.finished", feed="orders", rows=3)
    log.info("metadata.committed", feed="orders")
    log.info("feed.added", feed="orders")
    log.info("daemon.started")
    assert [e["event"] for e in lines(tmp_path / this_month("export"))] == ["export.finished"]
    assert [e["event"] for e in lines(tmp_path / this_month("metadata"))] == [
        "metadata.committed"]
    assert [e["event"] for e in lines(tmp_path / this_month("feed"))] == [
        "feed.added", "daemon.started"]


def test_lines_carry_level_utc_timestamp_and_bound_context(tmp_path: Path) -> None:
    """Each JSON line has level, an ISO UTC timestamp and the run's bound feed and run_id."""
    logs.configure(LoggingSettings(dir=tmp_path), stderr=io.StringIO())
    with structlog.contextvars.bound_contextvars(feed="orders", run_id="r1"):
        structlog.get_logger().info("export.finished", rows=1)
    (entry,) = lines(tmp_path / this_month("export"))
    assert entry["level"] == "info" and entry["feed"] == "orders" and entry["run_id"] == "r1"
    assert str(entry["timestamp"]).endswith("Z")


def record(msg: object, created: dt.datetime) -> logging.LogRecord:
    rec = logging.LogRecord("t", logging.INFO, __file__, 1, msg, None, None)
    rec.created = created.timestamp()
    return rec


def test_the_file_follows_the_month_of_each_event(tmp_path: Path) -> None:
    """An event of a new month opens the new month's file; the old one stays."""
    handler = logs.MonthlyFileHandler(tmp_path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        handler.emit(record({"event": "export.finished"}, dt.datetime(2025, 1, 31, 23, 59,
                                                                    tzinfo=dt.UTC)))
        handler.emit(record({"event": "export.finished"}, dt.datetime(2025, 2, 1, 0, 0, 1,
                                                                    tzinfo=dt.UTC)))
    finally:
        handler.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "export_2025_01.log", "export_2025_02.log"]


def test_months_older_than_keep_months_are_deleted(tmp_path: Path) -> None:
    """With keep_months=3, March keeps January..March files and deletes December's."""
    for name in ("export_2024_12.log", "feed_2025_01.log", "metadata_2025_02.log", "notes.txt"):
        (tmp_path / name).write_text("x\n")
    handler = logs.MonthlyFileHandler(tmp_path, keep_months=3)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        handler.emit(record("foreign", dt.datetime(2025, 3, 2, tzinfo=dt.UTC)))
    finally:
        handler.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "feed_2025_01.log", "feed_2025_03.log", "metadata_2025_02.log", "notes.txt"]


def test_stderr_is_json_unless_human(tmp_path: Path) -> None:
    """Off a terminal stderr gets JSON lines; human=True gets the readable console format."""
    out = io.StringIO()
    logs.configure(None, stderr=out)
    structlog.get_logger().info("feed.added", feed="orders")
    assert json.loads(out.getvalue())["event"] == "feed.added"
    human = io.StringIO()
    logs.configure(None, stderr=human, human=True)
    structlog.get_logger().info("feed.added", feed="orders")
    text = human.getvalue()
    assert "feed.added" in text and "feed=orders" in text and not text.startswith("{")


def test_secrets_never_appear(tmp_path: Path) -> None:
    """A Secret prints as ***, and keys that name secrets are masked whatever their value."""
    logs.configure(LoggingSettings(dir=tmp_path), stderr=io.StringIO())
    log = structlog.get_logger()
    log.info("feed.added", settings=Secret("hunter2"), password="hunter3",
             authorization="Basic aHVudGVyNA==")
    text = (tmp_path / this_month("feed")).read_text()
    assert "hunter" not in text and "aHVudGVyNA" not in text


def test_noisy_libraries_are_turned_down_to_warning(tmp_path: Path) -> None:
    """httpx, httpcore and apscheduler INFO lines are dropped; their warnings are kept."""
    logs.configure(LoggingSettings(dir=tmp_path), stderr=io.StringIO())
    logging.getLogger("httpx").info("HTTP Request: POST /query-stream")
    logging.getLogger("apscheduler.scheduler").info("Added job")
    logging.getLogger("apscheduler.scheduler").warning("skipped: maximum number of instances")
    entries = lines(tmp_path / this_month("feed"))
    assert [e["detail"] for e in entries] == ["skipped: maximum number of instances"]
    assert entries[0]["level"] == "warning" and entries[0]["event"] == "scheduler.message"


def test_apscheduler_warnings_name_the_feed(tmp_path: Path) -> None:
    """A real APScheduler skip (a run still going at the next tick) is a scheduler.run_skipped
    event with the job's feed name, in the feed log."""
    logs.configure(LoggingSettings(dir=tmp_path), stderr=io.StringIO())
    release = threading.Event()
    scheduler = BackgroundScheduler(timezone=dt.UTC)
    scheduler.add_job(release.wait, IntervalTrigger(seconds=0.2), args=[5], id="orders",
                      name="orders", max_instances=1, next_run_time=dt.datetime.now(dt.UTC))
    scheduler.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            path = tmp_path / this_month("feed")
            if path.exists() and any(e["event"] == "scheduler.run_skipped" for e in lines(path)):
                break
            time.sleep(0.05)
    finally:
        release.set()
        scheduler.shutdown(wait=True)
    skipped = [e for e in lines(tmp_path / this_month("feed")) if e["event"] == "scheduler.run_skipped"]
    assert skipped and skipped[0]["feed"] == "orders" and "maximum number" in str(skipped[0]["detail"])


def test_level_setting_filters_debug(tmp_path: Path) -> None:
    """logging.level=warning drops info events from files and stderr."""
    out = io.StringIO()
    logs.configure(LoggingSettings(dir=tmp_path, level="warning"), stderr=out)
    structlog.get_logger().info("feed.added")
    structlog.get_logger().warning("config.reload_failed", reason="x")
    assert [e["event"] for e in lines(tmp_path / this_month("feed"))] == [
        "config.reload_failed"]
    assert "feed.added" not in out.getvalue()


def test_unwritable_log_folder_warns_once_and_never_breaks_the_caller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log folder that cannot be created (a file in its way) gives one stderr warning; events
    are dropped without an exception, and files are written again once the folder can exist."""
    blocker = tmp_path / "logs"
    blocker.write_text("not a folder")
    handler = MonthlyFileHandler(blocker / "sub", keep_months=2)
    handler.setFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, {"event": "export.finished"}, None, None)
    handler.emit(record)
    handler.emit(record)
    warnings = capsys.readouterr().err
    assert warnings.count("cannot write log files") == 1 and "logging.dir" in warnings
    blocker.unlink()
    handler.emit(record)
    assert list((blocker / "sub").glob("export_*.log"))
    handler.close()
