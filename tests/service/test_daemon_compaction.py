"""The daemon's daily compaction job (``compact:<feed>``) on a local lake the real exporter
wrote from the sandbox (the daemon's own exports never fire during the test)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
import structlog
import yaml
from apscheduler.triggers.interval import IntervalTrigger
from lakecheck import assert_consistent, exporter, feed, read_listed
from scrape import value

from lakeexportd.config.load import load_config
from lakeexportd.config.model import Feed
from lakeexportd.export.exporter import ExportResult
from lakeexportd.lake import layout
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import StreamMetadata
from lakeexportd.sandbox import Sandbox
from lakeexportd.service.daemon import Daemon

YEARLY = {"cron": "0 0 1 1 *"}
SOURCE = "TRANSACTION_FLATTENED"
STREAM = {"name": "tx", "source": SOURCE, "kind": "stream", "schedule": YEARLY}
TABLE = {"name": "users", "source": "USERS", "kind": "table", "schedule": YEARLY}


class NoExports:
    def export(self, *args: object, **kwargs: object) -> ExportResult:
        raise AssertionError("no export runs in this test")


def write_config(path: Path, feeds: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({
        "ksqldb": {"url": "http://127.0.0.1:1"},
        "lake": {"root": str(path.parent / "lake")},
        "logging": {"dir": str(path.parent / "logs")},
        "scheduler": {"workers": 2, "stop_grace": "1s", "lock_wait": "300ms"},
        "feeds": feeds,
    }))
    return path


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    config = write_config(tmp_path / "lakeexportd.yaml", [STREAM, TABLE])
    made = Daemon(load_config(config), exporter_factory=lambda c, o: (NoExports(), lambda: None),
                  serve_metrics=False)
    made.start()
    try:
        yield made
    finally:
        made.stop()


def job_feed(daemon: Daemon) -> Feed:
    job = daemon.scheduler.get_job("compact:tx")
    assert job is not None
    found: Feed = job.args[0]
    return found


def test_the_daily_job_compacts_closed_days_logs_and_counts(
    daemon: Daemon, tmp_path: Path,
) -> None:
    """Streams get compact:<feed> by default (tables none), daily; a run turns each day that
    ended over a day ago into one file with the same rows, logs compact.finished once and
    counts the run and the files it replaced."""
    job = daemon.scheduler.get_job("compact:tx")
    assert job is not None and daemon.scheduler.get_job("compact:users") is None
    assert isinstance(job.trigger, IntervalTrigger)
    assert job.trigger.interval == dt.timedelta(days=1)
    root = tmp_path / "lake"
    with Sandbox.start(seed=23, preload=300, preload_days=4) as sb:
        times = [r["ROWTIME"] for r in sb.rows(SOURCE)]
        now = dt.datetime.fromtimestamp(min(times) / 1000, dt.UTC)
        ex = exporter(sb.url, root)
        tx = feed("tx", SOURCE, settle_delay=0.0)
        while now < dt.datetime.now(dt.UTC):
            now += dt.timedelta(hours=6)
            ex.export(tx, min(now, dt.datetime.now(dt.UTC)))
        rows = sb.rows(SOURCE)
    feed_dir = layout.feed_dir(root, "stream", "tx")
    doc = MetadataStore().load(feed_dir)
    assert isinstance(doc, StreamMetadata)
    cutoff = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    closed = {p.path: len(p.files) for p in doc.partitions
              if layout.partition_day(p.path) < cutoff}
    assert closed and max(closed.values()) >= 2
    with structlog.testing.capture_logs() as logs:
        assert daemon.compact_feed(job_feed(daemon)) == "success"
    (finished,) = [e for e in logs if e["event"] == "compact.finished"]
    assert finished["files_in"] == sum(n for n in closed.values() if n >= 2)
    after = MetadataStore().load(feed_dir)
    assert isinstance(after, StreamMetadata)
    assert all(len(p.files) == 1 for p in after.partitions if p.path in closed)
    table = read_listed(root, "stream", "tx")
    assert table.num_rows == len(rows)
    assert set(table.column("TRANSACTION_ID").to_pylist()) == {r["TRANSACTION_ID"] for r in rows}
    assert pc.sum(table.column("AMOUNT")).as_py() == sum(r["AMOUNT"] for r in rows)
    assert_consistent(root, "stream", "tx")
    registry = daemon.metrics.registry
    assert value(registry, "lakeexportd_compaction_runs_total", feed="tx", result="success") == 1
    assert value(registry, "lakeexportd_compacted_files_total", feed="tx") == \
        finished["files_in"]


def test_a_reload_with_compaction_null_removes_the_job(daemon: Daemon) -> None:
    """`compaction: null` on reload unschedules compact:<feed>; the export job stays."""
    write_config(daemon.config.path, [{**STREAM, "compaction": None}, TABLE])
    assert daemon.reload()
    assert daemon.scheduler.get_job("compact:tx") is None and daemon.scheduler.get_job("tx")
