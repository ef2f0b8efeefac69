"""The files/bytes and Delta version gauges, from a real export against the sandbox.

Truth: the Delta log as delta-rs reads it (version, active files) and the files' sizes on
disk; for a Parquet feed, the data files on disk. A run's result feeds the gauges after each
run (``service.runs``), ``_metadata.json`` at the daemon's start (``seed_from_metadata``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable
from lakecheck import NOW, exporter, feed
from prometheus_client import CollectorRegistry
from scrape import value

from lakeexportd.config.model import Feed
from lakeexportd.export.run import ExportResult
from lakeexportd.sandbox import Sandbox
from lakeexportd.service.metrics import Metrics
from lakeexportd.service.runs import seed_from_metadata


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=23, preload=300, preload_days=3) as sb:
        yield sb


def delta(name: str, source: str, kind: str = "stream") -> Feed:
    return dataclasses.replace(feed(name, source, kind), format="delta")


def log_truth(table_dir: Path) -> dict[str, Any]:
    """Version, active files and their bytes on disk, as delta-rs and the disk say."""
    table = DeltaTable(str(table_dir))
    paths = [uri.removeprefix("file://") for uri in table.file_uris()]
    return {"version": table.version(), "files": len(paths),
            "bytes": sum(os.path.getsize(p) for p in paths)}


def scraped(metrics: Metrics, name: str) -> dict[str, Any]:
    reg = metrics.registry
    return {"version": value(reg, "lakeexportd_delta_version", feed=name),
            "files": value(reg, "lakeexportd_lake_files", feed=name),
            "bytes": value(reg, "lakeexportd_lake_bytes", feed=name)}


def progress(metrics: Metrics, result: ExportResult) -> None:
    """What ``service.runs`` records after a successful run."""
    metrics.set_progress(result.feed, table_versions=result.versions_kept,
                         listed_files=result.listed_files, listed_bytes=result.listed_bytes,
                         delta_version=result.delta_version)


def test_delta_feeds_gauges_after_runs_and_at_start(sandbox: Sandbox, tmp_path: Path) -> None:
    """After each run and at a daemon's start, a Delta stream's and table's gauges are the
    log's version, its active files and their bytes; a table's older snapshot (kept for time
    travel) is not counted."""
    ex = exporter(sandbox.url, tmp_path)
    feeds = {"tx": delta("tx", "TRANSACTION_FLATTENED"),
             "users": delta("users", "USER_SUMMARY", "table")}
    metrics = Metrics(CollectorRegistry())
    for name in feeds:
        metrics.add_feed(name)
    for minute in range(2):
        for f in feeds.values():
            progress(metrics, ex.export(f, NOW + dt.timedelta(minutes=minute)))
    truth = {"tx": log_truth(tmp_path / "streams/tx"),
             "users": log_truth(tmp_path / "tables/users")}
    assert truth["tx"]["files"] > 1 and truth["users"]["version"] == 2
    for name in feeds:
        assert scraped(metrics, name) == truth[name]
    fresh = Metrics(CollectorRegistry())
    for name, f in feeds.items():
        fresh.add_feed(name)
        seed_from_metadata(fresh, f, tmp_path)
        assert scraped(fresh, name) == truth[name]


def test_parquet_feed_has_files_and_bytes_but_no_delta_version(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """A Parquet stream's files/bytes gauges are its data files on disk; no Delta series."""
    result = exporter(sandbox.url, tmp_path).export(feed("tx", "TRANSACTION_FLATTENED"), NOW)
    metrics = Metrics(CollectorRegistry())
    metrics.add_feed("tx")
    progress(metrics, result)
    on_disk = sorted((tmp_path / "streams/tx").rglob("data_*.parquet"))
    assert scraped(metrics, "tx") == {"version": None, "files": len(on_disk),
                                      "bytes": sum(p.stat().st_size for p in on_disk)}
