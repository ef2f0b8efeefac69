"""The daemon's daily tiering job (``tier:<feed>``) on moto's S3 server.

The exporter is a stand-in (no export runs here); the lake is written by hand through the
configured storage, and each object's class is read back from moto itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from apscheduler.triggers.interval import IntervalTrigger
from objectstores import Bucket, MotoS3
from scrape import value

from lakeexportd.config.load import load_config
from lakeexportd.config.model import Feed
from lakeexportd.export.exporter import ExportResult
from lakeexportd.lake import layout
from lakeexportd.lake.configured import lake_of
from lakeexportd.lake.locking import FeedLock
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import FileEntry, Partition, StreamMetadata
from lakeexportd.service.daemon import Daemon

YEARLY = {"cron": "0 0 1 1 *"}  # exports never fire during the test


class NoExports:
    def export(self, *args: object, **kwargs: object) -> ExportResult:
        raise AssertionError("no export runs in this test")


def write_config(path: Path, bucket: Bucket, feeds: list[dict[str, Any]]) -> Path:
    options = {k: str(v) for k, v in bucket.config.items() if k != "secret_access_key"}
    options.update(allow_http="true", secret_access_key_env="LAKE_TEST_SECRET")
    path.write_text(yaml.safe_dump({
        "ksqldb": {"url": "http://127.0.0.1:1"},
        "lake": {"root": f"{bucket.url}/lake", "storage": options, "lease_ttl": "2s"},
        "logging": {"dir": str(path.parent / "logs")},
        "scheduler": {"workers": 2, "stop_grace": "1s", "lock_wait": "300ms"},
        "feeds": feeds,
    }))
    return path


TIERED = {"name": "tx", "source": "TX", "kind": "stream", "schedule": YEARLY,
          "tiering": {"after": "2d", "class": "GLACIER_IR"}}
PLAIN = {"name": "orders", "source": "ORDERS", "kind": "stream", "schedule": YEARLY}


@pytest.fixture
def daemon(tmp_path: Path, s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    monkeypatch.setenv("LAKE_TEST_SECRET", str(s3_bucket.config["secret_access_key"]))
    config = write_config(tmp_path / "lakeexportd.yaml", s3_bucket, [TIERED, PLAIN])
    made = Daemon(load_config(config), exporter_factory=lambda c, o: (NoExports(), lambda: None),
                  serve_metrics=False)
    made.start()
    try:
        yield made
    finally:
        made.stop()


def write_lake(daemon: Daemon, ages: list[int]) -> dict[str, int]:
    """One object per day ``ages`` days old in feed tx, listed; key -> size."""
    lake = lake_of(daemon.config.lake)
    feed_dir = layout.feed_dir(lake.root, "stream", "tx")
    today = dt.datetime.now(dt.UTC).date()
    partitions, sizes = [], {}
    for age in ages:
        day = today - dt.timedelta(days=age)
        path, name = layout.day_partition(day), f"data_{day:%Y%m%d}_120000.parquet"
        data = f"rows of {day}".encode() * 50
        lake.storage.publish(feed_dir / path / name, data, file_mode=0o640)
        partitions.append(Partition(path, (FileEntry(name, 1, len(data)),)))
        sizes[f"lake/streams/tx/{path}/{name}"] = len(data)
    mark = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    store = MetadataStore(lake.storage)
    store.load(feed_dir)
    store.commit(feed_dir, StreamMetadata(feed="tx", source="TX", partitions=tuple(partitions),
                                          watermark_ms=mark))
    return sizes


def tier_job_feed(daemon: Daemon) -> Feed:
    job = daemon.scheduler.get_job("tier:tx")
    assert job is not None
    feed: Feed = job.args[0]
    return feed


def test_a_daily_job_per_tiered_stream_moves_its_old_days_logs_and_counts(
    daemon: Daemon, s3_bucket: Bucket, moto_s3: MotoS3,
) -> None:
    """Only the feed with tiering gets a tier job, daily, first a minute after start; a run
    moves its closed old days (classes read back from moto), logs tier.finished once and sets
    the tiering metrics."""
    job = daemon.scheduler.get_job("tier:tx")
    assert job is not None and daemon.scheduler.get_job("tier:orders") is None
    assert isinstance(job.trigger, IntervalTrigger)
    assert job.trigger.interval == dt.timedelta(days=1)
    wait = job.next_run_time - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=30) < wait <= dt.timedelta(seconds=60)
    sizes = write_lake(daemon, [5, 4, 1, 0])
    with structlog.testing.capture_logs() as logs:
        assert daemon.tier_feed(tier_job_feed(daemon)) == "success"
    classes = {k: v for k, v in moto_s3.storage_classes(s3_bucket.name).items() if k in sizes}
    old = [k for k in sizes if any(layout.day_partition(d) in k for d in _days(5, 4))]
    assert classes == {k: "GLACIER_IR" if k in old else "STANDARD" for k in sizes}
    (finished,) = [e for e in logs if e["event"] == "tier.finished"]
    assert finished["feed"] == "tx" and finished["files"] == 2 and finished["partitions"] == 2
    assert finished["bytes_per_tier"] == {"GLACIER_IR": sum(sizes[k] for k in old),
                                          "default": sum(s for k, s in sizes.items()
                                                         if k not in old)}
    registry = daemon.metrics.registry
    assert value(registry, "lakeexportd_tier_runs_total", feed="tx", result="success") == 1
    assert value(registry, "lakeexportd_tier_bytes", feed="tx",
                 tier="GLACIER_IR") == sum(sizes[k] for k in old)


def test_a_feed_locked_by_its_export_skips_the_tiering_run(daemon: Daemon) -> None:
    """While the feed's lease is held (an export), the run waits lock_wait, then is skipped,
    logged as tier.failed (skipped) and counted; nothing moves."""
    write_lake(daemon, [5, 0])
    lake = lake_of(daemon.config.lake)
    feed_dir = layout.feed_dir(lake.root, "stream", "tx")
    before = lake.storage.read_bytes(feed_dir / "_metadata.json")
    with FeedLock(feed_dir, feed="tx", wait=5, storage=lake.storage), \
            structlog.testing.capture_logs() as logs:
        assert daemon.tier_feed(tier_job_feed(daemon)) == "skipped"
    (failed,) = [e for e in logs if e["event"] == "tier.failed"]
    assert failed["result"] == "skipped" and "is locked by another lakeexportd" in failed["error"]
    assert lake.storage.read_bytes(feed_dir / "_metadata.json") == before
    assert value(daemon.metrics.registry, "lakeexportd_tier_runs_total", feed="tx",
                 result="skipped") == 1


def test_a_reload_without_tiering_removes_the_job(daemon: Daemon, s3_bucket: Bucket) -> None:
    write_config(daemon.config.path, s3_bucket, [{**TIERED, "tiering": None}, PLAIN])
    assert daemon.reload()
    assert daemon.scheduler.get_job("tier:tx") is None and daemon.scheduler.get_job("tx")


def _days(*ages: int) -> list[dt.date]:
    today = dt.datetime.now(dt.UTC).date()
    return [today - dt.timedelta(days=a) for a in ages]
