"""A realtime feed holds its lock all along, so it compacts its closed days itself, between
two rotations (the daemon's daily job would find the lock taken): fewer files, the same rows."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from lakeexportd.config.model import Compaction, Feed, Rotate, Schedule
from lakeexportd.export.exporter import DataLakeExporter
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.lake.metadata_model import StreamMetadata
from lakeexportd.sandbox import Sandbox

SOURCE = "TRANSACTION_STREAM"
DAY_MS = 86_400_000


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=7, preload=300, preload_days=1) as sb:
        yield sb


@pytest.mark.parametrize("fmt", ["parquet", "delta"])
def test_a_realtime_feed_compacts_its_closed_days_under_its_own_lock(
        sandbox: Sandbox, tmp_path: Path, fmt: str) -> None:
    client = KsqlDBClient(CurlTransport(sandbox.url), api="query-stream")  # type: ignore[arg-type]
    exporter = DataLakeExporter(client, tmp_path, orphan_grace=0.0)
    feed = Feed(name="tx", source=SOURCE, kind="stream", schedule=Schedule(every=60.0),
                mode="realtime", rotate=Rotate(age=0.2, idle=0.1), format=fmt,  # type: ignore[arg-type]
                compaction=Compaction(after_days=1, target_file_size=1 << 20))
    stop = threading.Event()
    runner = exporter.realtime(feed, stop=stop, clock=lambda: dt.datetime.now(dt.UTC))
    runner._next_compaction = float("inf")  # not before the small files are there
    thread = threading.Thread(target=exporter.run_realtime, args=(runner,))
    thread.start()
    try:
        wait_for(lambda: runner.rows_committed == 300, "the preloaded rows")
        old = int(time.time() * 1000) - 3 * DAY_MS
        for i in range(1, 5):  # four rotations at least: small files in a day long closed
            sandbox.generate(25, (old, old + 60_000))
            wait_for(lambda n=300 + 25 * i: runner.rows_committed == n,  # type: ignore[misc]
                     "a rotation of late rows")
        old_day = dt.datetime.fromtimestamp(old / 1000, dt.UTC)
        partition = f"year={old_day:%Y}/month={old_day:%m}/day={old_day:%d}"
        day_dir = tmp_path / "streams/tx" / partition
        files_before = len(list(day_dir.glob("*.parquet")))
        assert files_before >= 4
        runner._next_compaction = 0.0  # the next rotation compacts
        before = runner.commits
        sandbox.generate(10)
        wait_for(lambda: runner.commits > before and runner.compactions == 1,
                 "a rotation and the compaction after it")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive() and runner.state == "stopped"
    truth = sorted(r["TRANSACTION_ID"] for r in sandbox.rows(SOURCE))
    feed_dir = tmp_path / "streams/tx"
    if fmt == "delta":
        table = DeltaTable(str(feed_dir))
        ids = sorted(pl.from_arrow(table.to_pyarrow_table())["TRANSACTION_ID"].to_list())
        actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
        day_files = [a["path"] for a in actions
                     if (int(a["partition.year"]), int(a["partition.month"]),
                         int(a["partition.day"])) == (old_day.year, old_day.month, old_day.day)]
    else:
        doc = exporter.store.load(feed_dir)
        assert isinstance(doc, StreamMetadata)
        listed = [feed_dir / p.path / f.name for p in doc.partitions for f in p.files]
        ids = sorted(pl.read_parquet(listed)["TRANSACTION_ID"].to_list())
        day_files = [p for p in listed if partition in str(p)]
    assert ids == truth
    assert len(day_files) == 1, day_files  # four small files became one
