"""Realtime feeds against the sandbox's ground truth, read with real readers.

A Parquet feed is read with polars from the files its ``_metadata.json`` lists (parsed here
as plain JSON, not through lakeexportd), a Delta feed with ``deltalake.DeltaTable``. The truth
is ``sb.rows(stream)``: every row the sandbox ever appended, as ``(TRANSACTION_ID, ROWTIME)``
pairs. ``assert_exactly_once`` compares the two as multisets, so a duplicate, a lost row and
a row with another ROWTIME all fail, each named.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import deltalake
import polars as pl

from lakeexportd.config.model import Feed, Rotate, Schedule
from lakeexportd.export.exporter import DataLakeExporter
from lakeexportd.export.realtime import RealtimeFeed
from lakeexportd.sandbox import Sandbox

STREAM = "TRANSACTION_STREAM"
Row = tuple[str, int]  # (TRANSACTION_ID, ROWTIME)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def now_ms() -> int:
    return int(utc_now().timestamp() * 1000)


def realtime_feed(name: str = "rt", *, fmt: str = "parquet", age: float = 0.5,
                  idle: float = 0.3, rows: int = 1_000_000, **options: Any) -> Feed:
    return Feed(name=name, source=STREAM, kind="stream", schedule=Schedule(every=60),
                mode="realtime", rotate=Rotate(rows=rows, age=age, idle=idle), format=fmt,
                **options)  # type: ignore[arg-type]


def batch_feed(name: str = "rt", *, fmt: str = "parquet", settle_delay: float = 2.0,
               **options: Any) -> Feed:
    return Feed(name=name, source=STREAM, kind="stream", schedule=Schedule(every=60),
                settle_delay=settle_delay, format=fmt, **options)  # type: ignore[arg-type]


def feed_dir(root: Path, name: str = "rt") -> Path:
    return root / "streams" / name


def document(folder: Path) -> dict[str, Any]:
    path = folder / "_metadata.json"
    return json.loads(path.read_text()) if path.exists() else {}


def committed_records(folder: Path) -> int:
    """``total_records`` of the committed ``_metadata.json`` (0 before the first)."""
    return int(document(folder).get("total_records") or 0)


def listed_paths(folder: Path) -> list[Path]:
    """The data files a Parquet feed's ``_metadata.json`` lists."""
    doc = document(folder)
    return [folder / part["path"] / f["name"] for part in doc.get("partitions", [])
            for f in part["files"]]


def lake_rows(folder: Path, fmt: str) -> list[Row]:
    """Every row a reader of the lake sees."""
    if fmt == "delta":
        table = deltalake.DeltaTable(str(folder)).to_pyarrow_table(
            columns=["TRANSACTION_ID", "ROWTIME"])
        return list(zip(table.column("TRANSACTION_ID").to_pylist(),
                        table.column("ROWTIME").to_pylist()))
    files = listed_paths(folder)
    if not files:
        return []
    frame = pl.read_parquet([str(f) for f in files], columns=["TRANSACTION_ID", "ROWTIME"])
    return list(frame.iter_rows())


def truth_rows(sb: Sandbox, rows: Iterable[dict[str, Any]] | None = None) -> list[Row]:
    return [(r["TRANSACTION_ID"], r["ROWTIME"])
            for r in (sb.rows(STREAM) if rows is None else rows)]


def end_offsets(sb: Sandbox) -> dict[str, int]:
    """Per partition (as ``_metadata.json`` keys it) the ROWOFFSET of its last row."""
    ends: dict[str, int] = {}
    for r in sb.rows(STREAM):
        key = str(r["ROWPARTITION"])
        ends[key] = max(ends.get(key, -1), r["ROWOFFSET"])
    return ends


def assert_exactly_once(lake: list[Row], truth: list[Row]) -> None:
    """The lake holds each row of ``truth`` once, and nothing else."""
    have, want = Counter(lake), Counter(truth)
    duplicated = {r: n for r, n in have.items() if n > 1}
    missing = want - have
    extra = Counter({r: n for r, n in have.items() if r not in want})
    assert not duplicated and not missing and not extra, (
        f"lake {len(lake)} rows, truth {len(truth)}: {len(duplicated)} duplicated "
        f"{sorted(duplicated)[:5]}, {sum(missing.values())} missing {sorted(missing)[:5]}, "
        f"{sum(extra.values())} not in the truth {sorted(extra)[:5]}")


def unlisted_data_files(folder: Path) -> list[Path]:
    """Data files on disk a Parquet feed's ``_metadata.json`` does not list (temps too)."""
    listed = set(listed_paths(folder))
    return sorted(p for p in folder.rglob("*.parquet*") if p not in listed)


def wait_for(condition: Callable[[], object], timeout: float, what: str,
             poll: float = 0.05) -> Any:
    """Poll ``condition`` until it holds (its value) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


class RunningFeed:
    """One realtime runner in a thread, as the daemon's ``RealtimeJobs`` runs it."""

    def __init__(self, exporter: DataLakeExporter, feed: Feed) -> None:
        self.exporter = exporter
        self.stop = threading.Event()
        self.runner: RealtimeFeed = exporter.realtime(feed, stop=self.stop, clock=utc_now)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"realtime {feed.name}",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.exporter.run_realtime(self.runner, lock_wait=5)
        except BaseException as exc:  # noqa: BLE001 - re-raised by close()
            self.error = exc

    def running(self) -> bool:
        """The query runs (and the thread did not die)."""
        if self.error is not None:
            raise AssertionError(f"the realtime runner failed: {self.error!r}")
        return self.runner.state == "running"

    def close(self, timeout: float = 30) -> None:
        """SIGTERM's path: /close-query, commit what came, return."""
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the realtime runner did not stop"
        if self.error is not None:
            raise self.error
        assert self.runner.state == "stopped", self.runner.state
