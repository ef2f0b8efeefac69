"""Realtime feeds, in process: exactly once across everything that ends or moves a push query.

Issue 15, requirement 2, the cases that need no process kill (``test_realtime_crash.py`` has
those): ksqlDB ending or breaking the body mid-query, a partition that appears mid-run, and a
feed switched batch -> realtime -> batch -> realtime. Each test has its own sandbox (in this
process) and lake, so the sandbox's ground truth, every row of ``TRANSACTION_STREAM``, is
what the lake must hold (less, in the switch test, exactly the rows the design leaves out on
purpose), read back with polars or deltalake (``rtlake``).

The runner is ``DataLakeExporter.realtime`` + ``run_realtime`` in a thread, as the daemon
runs it; ``rotate`` is short (age 0.5 s, idle 0.3 s) so commits come quickly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from lakecheck import exporter
from rtlake import (
    STREAM,
    RunningFeed,
    assert_exactly_once,
    batch_feed,
    committed_records,
    document,
    end_offsets,
    feed_dir,
    lake_rows,
    listed_paths,
    now_ms,
    realtime_feed,
    truth_rows,
    unlisted_data_files,
    wait_for,
)
from structlog.testing import capture_logs

from lakeexportd import failpoints
from lakeexportd.sandbox import Sandbox

DAY_MS = 86_400_000


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # max_disorder_ms=0: rows made "now" have ROWTIME = now; late rows are only the ones a
    # test makes with an explicit (old) ROWTIME range, so what is late is known exactly.
    with Sandbox.start(seed=15, preload=1500, preload_days=2, max_disorder_ms=0) as sb:
        yield sb


def caught_up(sb: Sandbox, folder: Path, expected: int | None = None) -> bool:
    return committed_records(folder) >= (sb.counts()[STREAM] if expected is None else expected)


def check(sb: Sandbox, folder: Path, fmt: str) -> None:
    """Exactly once against the whole stream; the committed offsets are the stream's end;
    a Parquet feed has no file its document does not list."""
    assert_exactly_once(lake_rows(folder, fmt), truth_rows(sb))
    assert document(folder)["offsets"]["partitions"] == end_offsets(sb)
    if fmt == "parquet":
        assert unlisted_data_files(folder) == []


def late(sb: Sandbox, rows: int, days_ago: float) -> int:
    """Rows with a ROWTIME ``days_ago`` days back (a day partition closed long ago)."""
    at = now_ms() - int(days_ago * DAY_MS)
    return sb.generate(rows, (at, at + 60_000))


# -- ksqlDB ends or breaks the body --------------------------------------------------------------

# How the body of the running query ends: (fault injected before the first query, or None;
# how sb.end_queries ends it mid-burst, or None). Faults apply to the next query: the first.
ENDINGS = {
    "end": (None, "end"),  # a ksqlDB restart that completes its queries first
    "drop": (None, "drop"),  # a ksqlDB killed: the connection closes mid-body
    "end_push": ({"kind": "end_push", "rows": 700}, None),  # the server ends it after N rows
    "cut_mid_row": ({"kind": "cut_after_rows", "rows": 700}, None),  # broken inside a row
    "error_line": ({"kind": "error_after_rows", "rows": 700}, None),  # ksqlDB's error line
}


@pytest.mark.parametrize(("ending", "fmt"), [
    *((ending, "parquet") for ending in sorted(ENDINGS)),
    ("end", "delta"), ("cut_mid_row", "delta"),
])
def test_body_ends_mid_query_reconnects_exactly_once(
    sandbox: Sandbox, tmp_path: Path, ending: str, fmt: str
) -> None:
    """The query's body ends (cleanly or broken) in the middle of a burst of rows: the whole
    rows before it are committed, the runner reconnects from the committed offsets, and the
    lake holds every row once, late rows (days old) included."""
    sb = sandbox
    fault, how = ENDINGS[ending]
    if fault is not None:
        sb.inject(**fault)  # the first query (1,500 preloaded rows) ends after 700
    folder = feed_dir(tmp_path)
    feed = RunningFeed(exporter(sb.url, tmp_path), realtime_feed(fmt=fmt))
    try:
        if how is not None:
            wait_for(lambda: caught_up(sb, folder), 30, "the preload committed")
            assert feed.runner.reconnects == 0
            sb.generate(3000)  # the sandbox checks for the end every 2,000 rows it sends
            assert sb.end_queries(how) == 1
        wait_for(lambda: feed.runner.reconnects >= 1, 30, "a reconnection")
        wait_for(lambda: feed.running() and caught_up(sb, folder), 30, "every row committed")
        assert feed.runner.reconnects == 1
        # The new query goes on from the offsets: rows now and rows days late.
        sb.generate(300)
        late(sb, 40, 1.5)
        wait_for(lambda: caught_up(sb, folder), 30, "the new rows committed")
    finally:
        feed.close()
    check(sb, folder, fmt)


def test_ksqldb_down_for_a_while_after_a_drop(sandbox: Sandbox, tmp_path: Path) -> None:
    """The connection drops and ksqlDB answers 503 for a while (a restart): the runner
    retries with a backoff and goes on from its offsets."""
    sb = sandbox
    folder = feed_dir(tmp_path)
    feed = RunningFeed(exporter(sb.url, tmp_path, max_retries=1), realtime_feed())
    try:
        wait_for(lambda: caught_up(sb, folder), 30, "the preload committed")
        sb.inject("status", status=503, count=4, path="/query-stream")
        sb.generate(500)
        assert sb.end_queries("drop") == 1
        wait_for(lambda: not sb.app.faults.pending(), 30, "every 503 answered")
        assert feed.runner.reconnects >= 2  # the first attempts failed
        wait_for(lambda: feed.running() and caught_up(sb, folder), 30, "every row committed")
        sb.generate(100)
        wait_for(lambda: caught_up(sb, folder), 30, "the new rows committed")
    finally:
        feed.close()
    check(sb, folder, "parquet")


def test_stop_mid_burst_then_restart(sandbox: Sandbox, tmp_path: Path) -> None:
    """Stopped (SIGTERM's path: /close-query, drain, commit) in the middle of a burst, and
    started again: what came before the stop is committed, the rest read after it."""
    sb = sandbox
    folder = feed_dir(tmp_path)
    ex = exporter(sb.url, tmp_path)
    feed = RunningFeed(ex, realtime_feed(age=30, idle=30))  # commits come from the stop only
    wait_for(feed.running, 30, "the query")
    sb.generate(4500)
    feed.close()
    stopped_at = committed_records(folder)
    feed = RunningFeed(ex, realtime_feed())
    try:
        sb.generate(200)
        late(sb, 30, 2.0)
        wait_for(lambda: caught_up(sb, folder), 30, "every row committed")
    finally:
        feed.close()
    assert 0 < stopped_at
    check(sb, folder, "parquet")


def test_backoff_starts_over_after_a_query_that_delivered(sandbox: Sandbox,
                                                          tmp_path: Path) -> None:
    """Each broken body after a query that delivered rows is retried after the first
    backoff. Regression: the backoff only started over after a clean end, so every drop
    (a ksqlDB restart that closes connections, a network blip) doubled it for good: the
    4th drop of a feed's life waited 4 s, the 7th 30 s, and after one failure 60 s."""
    sb = sandbox
    folder = feed_dir(tmp_path)
    with capture_logs() as logs:
        feed = RunningFeed(exporter(sb.url, tmp_path), realtime_feed())
        try:
            for drops in range(3):
                wait_for(lambda: feed.running() and caught_up(sb, folder), 30, "caught up")
                sb.generate(100)
                wait_for(lambda: caught_up(sb, folder), 30, "the new rows committed")
                assert sb.end_queries("drop") == 1
                wait_for(lambda n=drops: feed.runner.reconnects > n, 30, "a reconnection")
            sb.generate(100)
            wait_for(lambda: feed.running() and caught_up(sb, folder), 30, "caught up")
        finally:
            feed.close()
    waits = [e["retry_in_s"] for e in logs if e["event"] == "realtime.reconnecting"]
    assert waits == [0.5, 0.5, 0.5]
    check(sb, folder, "parquet")


# -- a partition that appears mid-run ------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["parquet", "delta"])
def test_partition_added_mid_run(sandbox: Sandbox, tmp_path: Path, fmt: str) -> None:
    """A partition added while the query runs is read from its first row, committed with
    its own offset, and kept across a reconnection and a restart of the runner; one added
    while no runner runs is read from its first row by the next query (its WHERE names the
    committed partitions only)."""
    sb = sandbox
    folder = feed_dir(tmp_path)
    ex = exporter(sb.url, tmp_path)
    feed = RunningFeed(ex, realtime_feed(fmt=fmt))
    try:
        wait_for(lambda: caught_up(sb, folder), 30, "the preload committed")
        assert set(document(folder)["offsets"]["partitions"]) == {"0", "1", "2", "3"}
        added = sb.add_partition(STREAM)
        sb.generate(800)
        late(sb, 50, 1.2)
        wait_for(lambda: caught_up(sb, folder), 30, "rows of the new partition committed")
        assert document(folder)["offsets"]["partitions"] == end_offsets(sb)
        assert str(added) in end_offsets(sb)
        # A reconnection: the new query's WHERE now names partition 4's offset.
        assert sb.end_queries("end") == 1
        wait_for(lambda: feed.runner.reconnects >= 1 and feed.running(), 30, "a reconnection")
        sb.generate(300)
        wait_for(lambda: caught_up(sb, folder), 30, "rows after the reconnection")
    finally:
        feed.close()
    check(sb, folder, fmt)
    # A partition added while nothing runs.
    second = sb.add_partition(STREAM)
    sb.generate(600)
    feed = RunningFeed(ex, realtime_feed(fmt=fmt))
    try:
        wait_for(lambda: caught_up(sb, folder), 30, "rows after the restart")
    finally:
        feed.close()
    assert str(second) in end_offsets(sb)
    check(sb, folder, fmt)


# -- batch -> realtime -> batch -> realtime ------------------------------------------------------

@pytest.mark.parametrize("fmt", ["parquet", "delta"])
def test_switch_batch_realtime_batch_realtime(sandbox: Sandbox, tmp_path: Path,
                                              fmt: str) -> None:
    """A feed switched from batch to realtime and back, twice: each row once, late rows
    included, except exactly the rows the design leaves out on purpose, which are checked
    to be just those:

    - batch -> realtime starts after the batch watermark W (``push_after``'s ``after_ms``),
      for good: a row appended after the last batch run with ROWTIME <= W is not exported,
      whether it arrives before the switch or while realtime runs. A batch feed leaves the
      same rows out (they are later than its settle delay), so the switch loses nothing
      batch mode would have kept; rows with ROWTIME > W land however late they are.
    - realtime -> batch: the first batch run past the realtime watermark W2 (the newest
      ROWTIME committed) starts ``settle_delay`` before it and leaves out, row for row, what
      the lake holds of that overlap (``export.overlap``): rows less than ``settle_delay``
      late land, as in batch mode all along; older ones are late for batch mode too.
    """
    sb = sandbox
    folder = feed_dir(tmp_path)
    ex = exporter(sb.url, tmp_path)
    batch = batch_feed(fmt=fmt, settle_delay=2.0)
    live = realtime_feed(fmt=fmt)
    left_out: list[tuple[str, int]] = []

    def make(rows: int, span: tuple[int, int] | None = None) -> list[tuple[str, int]]:
        before = sb.counts()[STREAM]
        sb.generate(rows, span)
        return truth_rows(sb, sb.rows(STREAM)[before:])

    # 1. batch: the preload and rows of a minute ago; rows of now are within settle_delay.
    make(200, (now_ms() - 60_000, now_ms() - 30_000))
    make(100)
    first = ex.export(batch, dt.datetime.now(dt.UTC))
    w1 = first.watermark_ms
    assert w1 is not None and 0 < first.rows < sb.counts()[STREAM]
    assert document(folder).get("offsets") is None
    late_below_w1 = make(30, (w1 - 600_000, w1))  # after the batch run, below its watermark
    left_out += late_below_w1

    # 2. realtime: starts after w1; rows of now and rows late but after w1 land.
    feed = RunningFeed(ex, live)
    try:
        expected = sb.counts()[STREAM] - len(left_out)
        wait_for(lambda: caught_up(sb, folder, expected), 30, "realtime caught up")
        assert document(folder)["offsets"]["after_ms"] == w1
        make(300)
        late_above_w1 = make(60, (w1 + 1, w1 + 1000))  # older than rows already committed
        left_out += make(20, (w1 - 5000, w1))  # at or below w1: left out for good
        expected = sb.counts()[STREAM] - len(left_out)
        wait_for(lambda: caught_up(sb, folder, expected), 30, "the realtime rows committed")
    finally:
        feed.close()
    w2 = document(folder)["watermark"]["rowtime_ms"]
    assert w2 == max(r[1] for r in truth_rows(sb))  # the newest ROWTIME committed
    assert set(late_above_w1) <= set(lake_rows(folder, fmt))

    # 3. back to batch. While now - settle_delay has not passed w2, a run waits (the
    # offsets kept); the first run past it starts settle_delay before w2 and leaves out
    # the rows of that overlap the lake holds.
    second = ex.export(batch, dt.datetime.fromtimestamp((w2 + 1000) / 1000, dt.UTC))
    assert (second.rows, second.watermark_ms) == (0, w2)
    assert document(folder)["offsets"]["after_ms"] == w1
    make(150)  # now: after w2
    late_below_w2 = make(25, (w2 - 1500, w2))  # < settle_delay (2 s) late: they land
    left_out += make(10, (w2 - 10_000, w2 - 5_000))  # later than settle_delay: as in batch mode
    newest = max(r[1] for r in truth_rows(sb))
    third = ex.export(batch, dt.datetime.fromtimestamp((newest + 2001) / 1000, dt.UTC))
    w3 = third.watermark_ms
    assert w3 is not None and w3 > newest
    assert document(folder).get("offsets") is None
    assert set(late_below_w2) <= set(lake_rows(folder, fmt))

    # 4. realtime again: after w3, not from the first realtime phase's offsets (which would
    # export the batch runs' rows a second time).
    feed = RunningFeed(ex, live)
    try:
        wait_for(feed.running, 30, "the second realtime query")
        make(200, (w3 + 1, w3 + 2000))
        make(200)
        left_out += make(15, (w3 - 2000, w3))
        expected = sb.counts()[STREAM] - len(left_out)
        wait_for(lambda: caught_up(sb, folder, expected), 30, "the second realtime phase")
    finally:
        feed.close()
    assert document(folder)["offsets"]["after_ms"] == w3

    truth = truth_rows(sb)
    lake = lake_rows(folder, fmt)
    assert_exactly_once(lake, [r for r in truth if r not in set(left_out)])
    assert len(left_out) == 30 + 20 + 10 + 15
    if fmt == "parquet":
        assert unlisted_data_files(folder) == []


@pytest.mark.parametrize("fmt", ["parquet", "delta"])
def test_rows_days_late_land(sandbox: Sandbox, tmp_path: Path, fmt: str) -> None:
    """A realtime feed that never ran in batch mode has no time limit (``after_ms`` None):
    rows days late land, also in rotations holding nothing but late rows (whose ROWTIMEs
    do not move the watermark), which is the no-late-row-loss half of requirement 2."""
    sb = sandbox
    folder = feed_dir(tmp_path)
    feed = RunningFeed(exporter(sb.url, tmp_path), realtime_feed(fmt=fmt))
    try:
        wait_for(lambda: caught_up(sb, folder), 30, "the preload committed")
        sb.generate(50)
        wait_for(lambda: caught_up(sb, folder), 30, "rows of now")
        watermark = document(folder)["watermark"]["rowtime_ms"]
        for days in (3.0, 0.001):  # late only: each its own rotation
            late(sb, 40, days)
            wait_for(lambda: caught_up(sb, folder), 30, f"rows {days} days late")
        assert document(folder)["watermark"]["rowtime_ms"] == watermark
        sb.generate(60)
        wait_for(lambda: caught_up(sb, folder), 30, "rows of now again")
        assert document(folder)["offsets"]["after_ms"] is None
    finally:
        feed.close()
    check(sb, folder, fmt)


# -- a rotation that fails -----------------------------------------------------------------------

@pytest.mark.parametrize(("fmt", "point"), [("parquet", "export.before_commit"),
                                            ("delta", "delta.before_log_commit")])
def test_a_failed_rotation_of_late_rows_leaves_no_file_and_is_done_again(
        sandbox: Sandbox, tmp_path: Path, fmt: str, point: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up at the commit of a rotation holding only late rows (its watermark
    is the previous commit's, so the watermark cannot say whether it landed): its files
    go at once, the runner starts again from the committed offsets, every row lands once."""
    sb = sandbox
    folder = feed_dir(tmp_path)
    feed = RunningFeed(exporter(sb.url, tmp_path), realtime_feed(fmt=fmt))
    try:
        wait_for(lambda: caught_up(sb, folder), 30, "the preload committed")
        monkeypatch.setattr(failpoints, "_hits", {})  # the next hit is the first
        monkeypatch.setenv("LAKEEXPORTD_FAILPOINT", f"{point}:1:enospc")
        with capture_logs() as logs:
            late(sb, 40, days_ago=1.5)
            wait_for(lambda: any(e["event"] == "realtime.failed" for e in logs), 30,
                     "the failed rotation")
            # what it wrote is gone before the next query starts
            on_disk = {p.name for p in folder.rglob("*.parquet")}
            listed = {Path(p).name for p in lake_files(folder, fmt)}
            assert on_disk == listed
        monkeypatch.delenv("LAKEEXPORTD_FAILPOINT")
    finally:  # the runner now waits FAILED_BACKOFF_S: a new one starts at once
        feed.close()
    feed = RunningFeed(exporter(sb.url, tmp_path), realtime_feed(fmt=fmt))
    try:
        wait_for(lambda: caught_up(sb, folder), 30, "the late rows committed")
    finally:
        feed.close()
    check(sb, folder, fmt)


def lake_files(folder: Path, fmt: str) -> list[str]:
    """The data files the feed's commit point lists (the Delta log, or _metadata.json)."""
    if fmt == "delta":
        import deltalake
        return list(deltalake.DeltaTable(str(folder)).file_uris())
    return [str(p) for p in listed_paths(folder)]


# -- start: now ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["parquet", "delta"])
def test_start_now_commits_its_moment_before_the_first_row(sandbox: Sandbox, tmp_path: Path,
                                                           fmt: str) -> None:
    """``start: now`` skips the history, and its moment is committed at once: a query that
    ends before its first row starts again from the same moment, so the rows made between
    the two queries land (none of the preload does)."""
    sb = sandbox
    folder = feed_dir(tmp_path)
    feed = RunningFeed(exporter(sb.url, tmp_path), realtime_feed(fmt=fmt, start="now"))
    try:
        wait_for(feed.running, 30, "the first query")
        point = document(folder)["offsets"]
        assert point["partitions"] == {} and point["after_ms"] is not None
        assert document(folder)["watermark"]["rowtime_ms"] == point["after_ms"]
        before = sb.counts()[STREAM]
        sb.end_queries("drop")  # the query ends before any row
        wait_for(lambda: feed.runner.state == "reconnecting", 30, "the reconnection")
        sb.generate(50)  # before the next query starts: ROWTIME earlier than its "now"
        new = truth_rows(sb, sb.rows(STREAM)[before:])
        wait_for(lambda: committed_records(folder) >= 50, 30, "the 50 rows")
        assert document(folder)["offsets"]["after_ms"] == point["after_ms"]
    finally:
        feed.close()
    assert_exactly_once(lake_rows(folder, fmt), new)
