"""Delta feeds (``format: delta``) against the sandbox over real HTTP (DESIGN.md section 12).

The reader is delta-rs's own (``deltalake.DeltaTable``), and Polars' ``read_delta``; the ground
truth is the sandbox's rows. A Delta ``timestamp`` is microseconds and Delta has no TIME type
(lakeexportd writes TIME as ISO strings): the truth is mapped to those types here, by hand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from lakecheck import NOW, exporter, feed, wire_truth

from lakeexportd.errors import LakeStateError, SchemaError
from lakeexportd.lake import layout
from lakeexportd.sandbox import Sandbox

APP = "lakeexportd:{}"


@pytest.fixture(scope="module")
def static() -> Iterator[Sandbox]:
    """3,000 transactions over 5 days that never change."""
    with Sandbox.start(seed=3, preload=3000, preload_days=5) as sb:
        yield sb


@pytest.fixture
def fresh() -> Iterator[Sandbox]:
    with Sandbox.start(seed=5, preload=600, preload_days=3) as sb:
        yield sb


def delta_feed(name: str, source: str, kind: str = "stream", **options: Any) -> Any:
    return dataclasses.replace(feed(name, source, kind, **options), format="delta")


def plain(value: Any) -> Any:
    """A value as a Delta reader gives it back: TIME as its ISO text (microseconds), maps as
    lists of pairs, timestamps compared as instants."""
    if isinstance(value, dt.time):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value


def rows_by(table: pa.Table, key: str) -> dict[Any, dict[str, Any]]:
    return {row[key]: {k: plain(v) for k, v in row.items()} for row in table.to_pylist()}


def test_stream_rows_land_once_with_delta_types(static: Sandbox, tmp_path: Path) -> None:
    """Every row once, values equal to the sandbox's; timestamps are microseconds, TIME is text,
    decimals keep precision and scale, year/month/day are integer partition columns."""
    result = exporter(static.url, tmp_path).export(delta_feed("tx", "TRANSACTION_STREAM"), NOW)
    truth = wire_truth(static.arrow("TRANSACTION_STREAM"))
    assert result.rows == truth.num_rows == 3000
    table = DeltaTable(str(tmp_path / "streams/tx"))
    lake = table.to_pyarrow_table()
    assert lake.num_rows == 3000
    got, want = rows_by(lake, "TRANSACTION_ID"), rows_by(truth, "TRANSACTION_ID")
    assert got.keys() == want.keys()
    for key, row in want.items():
        for column, value in row.items():
            assert got[key][column] == value, (key, column)
    schema = lake.schema
    assert schema.field("TRANSACTION_TIME").type == pa.timestamp("us", tz="UTC")
    assert schema.field("LOCAL_TIME").type in (pa.string(), pa.large_string(), pa.string_view())
    assert schema.field("AMOUNT").type == pa.decimal128(10, 2)
    assert table.metadata().partition_columns == ["year", "month", "day"]
    for row in lake.select(["ROWTIME", "year", "month", "day"]).to_pylist():
        day = dt.datetime.fromtimestamp(row["ROWTIME"] / 1000, dt.UTC).date()
        assert (row["year"], row["month"], row["day"]) == (day.year, day.month, day.day)
    assert table.transaction_version(APP.format("tx")) == result.watermark_ms


def test_each_run_is_one_commit_carrying_the_watermark(fresh: Sandbox, tmp_path: Path) -> None:
    """A run appends once with the transaction at its watermark; a run whose window is empty
    still moves it; the summary's watermark is the log's."""
    ex = exporter(fresh.url, tmp_path)
    f = delta_feed("tx", "TRANSACTION_FLATTENED", settle_delay=0.0)
    first = ex.export(f, NOW)
    second = ex.export(f, NOW + dt.timedelta(minutes=1))
    assert (first.rows, second.rows) == (600, 0)
    table = DeltaTable(str(tmp_path / "streams/tx"))
    history = table.history()
    writes = [h for h in history if h["operation"] == "WRITE"]
    assert len(writes) == 2
    assert [h["lakeexportd.rows"] for h in sorted(writes, key=lambda h: h["version"])] == \
        ["600", "0"]
    assert table.transaction_version(APP.format("tx")) == second.watermark_ms
    doc = json.loads((tmp_path / "streams/tx/_metadata.json").read_text())
    assert doc["watermark"]["rowtime_ms"] == second.watermark_ms
    assert doc["format"] == "delta" and doc["delta_version"] == table.version()
    assert doc["total_records"] == 600 == pl.read_delta(str(tmp_path / "streams/tx")).height
    assert sum(p["records"] for p in doc["partitions"]) == 600


def test_a_lost_summary_never_exports_twice(fresh: Sandbox, tmp_path: Path) -> None:
    """The log is the commit point: with _metadata.json gone or an older copy restored, the
    next run starts at the log's watermark and appends only new rows."""
    ex = exporter(fresh.url, tmp_path)
    f = delta_feed("tx", "TRANSACTION_FLATTENED", settle_delay=0.0)
    first = ex.export(f, NOW)
    summary = tmp_path / "streams/tx/_metadata.json"
    backup = summary.read_bytes()
    assert first.watermark_ms is not None
    fresh.generate(25, (first.watermark_ms + 1, first.watermark_ms + 1000))
    ex.export(f, NOW + dt.timedelta(minutes=1))
    summary.write_bytes(backup)  # a restored backup: its watermark is the first run's
    third = ex.export(f, NOW + dt.timedelta(minutes=2))
    assert third.rows == 0
    summary.unlink()
    assert ex.export(f, NOW + dt.timedelta(minutes=3)).rows == 0
    lake = pl.read_delta(str(tmp_path / "streams/tx"))
    assert lake.height == 625 == lake["TRANSACTION_ID"].n_unique()
    assert json.loads(summary.read_text())["total_records"] == 625


def test_table_snapshots_are_versions_and_old_ones_stay_readable(fresh: Sandbox,
                                                                 tmp_path: Path) -> None:
    """Each snapshot is one overwrite commit; the newest retention_versions stay readable."""
    ex = exporter(fresh.url, tmp_path)
    f = delta_feed("users", "USER_SUMMARY", "table", retention_versions=2)
    counts = []
    for minute in range(3):
        fresh.generate(40)
        result = ex.export(f, NOW + dt.timedelta(minutes=minute))
        counts.append((result.version, len(fresh.table("USER_SUMMARY"))))
        assert result.rows == counts[-1][1]
    path = str(tmp_path / "tables/users")
    table = DeltaTable(path)
    for version, rows in counts:
        assert DeltaTable(path, version=version).to_pyarrow_table().num_rows == rows
    assert table.to_pyarrow_table().num_rows == counts[-1][1]
    truth = {r["USER_ID"]: r["TOTAL_AMOUNT"] for r in fresh.table("USER_SUMMARY")}
    assert {r["USER_ID"]: r["TOTAL_AMOUNT"] for r in table.to_pyarrow_table().to_pylist()} == truth
    doc = json.loads((tmp_path / "tables/users/_metadata.json").read_text())
    assert [v["version"] for v in doc["versions"]] == [v for v, _ in counts[-2:]]
    assert doc["current_version"] == counts[-1][0] and doc["total_records"] == counts[-1][1]


def test_an_added_column_widens_the_table(fresh: Sandbox, tmp_path: Path) -> None:
    ex = exporter(fresh.url, tmp_path)
    f = delta_feed("tx", "TRANSACTION_FLATTENED", settle_delay=0.0)
    first = ex.export(f, NOW)
    ex.client.ksql("ALTER STREAM TRANSACTION_FLATTENED ADD COLUMN NOTE STRING;")
    assert first.watermark_ms is not None
    fresh.generate(20, (first.watermark_ms + 1, first.watermark_ms + 500))
    assert ex.export(f, NOW + dt.timedelta(seconds=1)).rows == 20
    lake = pl.read_delta(str(tmp_path / "streams/tx"))
    assert lake.height == 620 and lake["NOTE"].null_count() == 620  # the sandbox leaves it null
    doc = json.loads((tmp_path / "streams/tx/_metadata.json").read_text())
    assert doc["schema_history"][-1]["added"] == ["NOTE"]


def test_retention_days_removes_old_days_in_the_run_commit(static: Sandbox, tmp_path: Path) -> None:
    """Days past retention_days leave the table in the same commit as the new files; older
    versions still read them until vacuum."""
    ex = exporter(static.url, tmp_path)
    truth = static.arrow("TRANSACTION_STREAM")
    newest = max(truth.column("ROWTIME").to_pylist())
    now = dt.datetime.fromtimestamp(newest / 1000, dt.UTC) + dt.timedelta(hours=1)
    f = delta_feed("tx", "TRANSACTION_STREAM", retention_days=2, settle_delay=0.0)
    ex.export(f, now)
    cutoff = layout.retention_cutoff(now, 2)
    kept = [ms for ms in truth.column("ROWTIME").to_pylist()
            if dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date() >= cutoff]
    lake = pl.read_delta(str(tmp_path / "streams/tx"))
    assert 0 < lake.height == len(kept) < truth.num_rows


def test_delta_refuses_what_it_cannot_hold(fresh: Sandbox, tmp_path: Path) -> None:
    """A column named like a partition column is refused before anything is written."""
    ex = exporter(fresh.url, tmp_path)
    ex.client.ksql("ALTER STREAM TRANSACTION_FLATTENED ADD COLUMN YEAR INTEGER;")
    with pytest.raises(SchemaError, match=r"clash with the Delta partition columns"):
        ex.export(delta_feed("tx", "TRANSACTION_FLATTENED"), NOW)
    assert not (tmp_path / "streams/tx/_delta_log").exists()
    assert not list((tmp_path / "streams").rglob("*.parquet"))


def test_a_feed_cannot_switch_format_in_place(static: Sandbox, tmp_path: Path) -> None:
    ex = exporter(static.url, tmp_path)
    ex.export(feed("tx", "TRANSACTION_FLATTENED"), NOW)
    with pytest.raises(LakeStateError, match=r"holds Parquet files .*`format: delta`"):
        ex.export(delta_feed("tx", "TRANSACTION_FLATTENED"), NOW + dt.timedelta(minutes=1))
    ex.export(delta_feed("dx", "TRANSACTION_FLATTENED"), NOW)
    with pytest.raises(LakeStateError, match=r"is a Delta table .*`format: parquet`"):
        ex.export(feed("dx", "TRANSACTION_FLATTENED"), NOW + dt.timedelta(minutes=1))
    assert pl.read_delta(str(tmp_path / "streams/dx")).height == 3000


def test_decimals_keep_every_digit(static: Sandbox, tmp_path: Path) -> None:
    """DECIMAL values read back from the Delta table equal the sandbox's exactly."""
    exporter(static.url, tmp_path).export(delta_feed("tx", "TRANSACTION_FLATTENED"), NOW)
    lake = DeltaTable(str(tmp_path / "streams/tx")).to_pyarrow_table()
    total = sum((r["AMOUNT"] for r in lake.select(["AMOUNT"]).to_pylist()), Decimal(0))
    truth = sum((r["AMOUNT"] for r in static.rows("TRANSACTION_FLATTENED")), Decimal(0))
    assert total == truth


def test_history_and_files_travel_through_the_log(fresh: Sandbox, tmp_path: Path) -> None:
    """`history` lists the log's commits; `files --version N` and `--as-of` give the files of a
    past version, and reading them gives exactly the rows of that run (sandbox truth)."""
    from lakeexportd.audit.files import committed_files
    from lakeexportd.audit.history import history
    from lakeexportd.lake.storage import LOCAL

    ex = exporter(fresh.url, tmp_path)
    f = delta_feed("tx", "TRANSACTION_FLATTENED", settle_delay=0.0)
    first = ex.export(f, NOW)
    assert first.watermark_ms is not None
    fresh.generate(30, (first.watermark_ms + 1, first.watermark_ms + 1000))
    ex.export(f, NOW + dt.timedelta(minutes=1))
    feed_dir = tmp_path / "streams/tx"
    entries = history(LOCAL, feed_dir, None)
    runs = [h for h in entries if h.operation == "append"]
    assert [(h.version, h.rows) for h in runs] == [(2, 30), (1, 600)]
    assert entries[0].current and entries[-1].operation == "create table"
    old = committed_files(LOCAL, feed_dir, None, version=1)
    ids = set(pl.concat([pl.read_parquet(c.url) for c in old])["TRANSACTION_ID"])
    truth = {r["TRANSACTION_ID"] for r in fresh.rows("TRANSACTION_FLATTENED")
             if r["ROWTIME"] <= first.watermark_ms}
    assert ids == truth and len(ids) == 600
    stamp = next(h["timestamp"] for h in DeltaTable(str(feed_dir)).history() if h["version"] == 1)
    # the millisecond `history` prints for version 1, plus 1 us (not a whole second, which
    # `files` stretches to its last ms). delta-rs's own as-of goes by the log files' mtimes,
    # a few ms later, and gave version 0 here now and then.
    when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=stamp,
                                                                 microseconds=1)
    assert {c.url for c in committed_files(LOCAL, feed_dir, None, as_of=when)} == \
        {c.url for c in old}
    assert len(committed_files(LOCAL, feed_dir, None)) > len(old)
    with pytest.raises(Exception, match="no Delta version 9"):
        committed_files(LOCAL, feed_dir, None, version=9)


def test_compaction_optimizes_closed_days_and_keeps_every_row(static: Sandbox,
                                                              tmp_path: Path) -> None:
    """Delta compaction (optimize per closed day, then vacuum): fewer files, the same rows
    (count, exact sums, id set, per-day counts), the watermark kept, one OPTIMIZE commit per
    day; a dry run changes nothing."""
    from lakeexportd.lake.compaction import compact_feed
    from lakeexportd.lake.storage import LOCAL

    f = delta_feed("tx", "TRANSACTION_FLATTENED", max_rows_per_file=100)
    ex = exporter(static.url, tmp_path)
    ex.export(f, NOW)
    path = str(tmp_path / "streams/tx")
    before = DeltaTable(path)
    rows_before = before.to_pyarrow_table()
    files_before = len(before.file_uris())
    snapshot = sorted(str(p) for p in (tmp_path / "streams/tx").rglob("*"))
    dry = compact_feed(LOCAL, tmp_path, f, now=NOW, lock_wait=2, orphan_grace=0,
                       before=dt.date(2030, 1, 1), dry_run=True)
    assert files_before - 5 <= dry.files_in <= files_before and dry.files_out == 0
    assert sorted(str(p) for p in (tmp_path / "streams/tx").rglob("*")) == snapshot
    done = compact_feed(LOCAL, tmp_path, f, now=NOW, lock_wait=2, orphan_grace=0,
                        before=dt.date(2030, 1, 1))
    after = DeltaTable(path)
    rows_after = after.to_pyarrow_table()
    days = {(r["year"], r["month"], r["day"]) for r in rows_before.select(
        ["year", "month", "day"]).to_pylist()}
    assert len(after.file_uris()) == len(days) < files_before
    assert done.files_in == dry.files_in and done.files_out == len(days) - (files_before - dry.files_in)
    assert rows_after.num_rows == rows_before.num_rows == 3000
    assert sorted(rows_after.column("TRANSACTION_ID").to_pylist()) == \
        sorted(rows_before.column("TRANSACTION_ID").to_pylist())
    for day in days:
        def on(t: pa.Table, day: tuple[int, int, int] = day) -> list[dict[str, Any]]:
            return [r for r in t.select(["year", "month", "day", "AMOUNT"]).to_pylist()
                    if (r["year"], r["month"], r["day"]) == day]
        assert len(on(rows_after)) == len(on(rows_before))
        assert sum(r["AMOUNT"] for r in on(rows_after)) == sum(r["AMOUNT"] for r in on(rows_before))
    assert after.transaction_version(APP.format("tx")) == before.transaction_version(APP.format("tx"))
    assert sum(h["operation"] == "OPTIMIZE" for h in after.history()) == len(done.days)
    # The version before compaction still reads its own files (vacuum keeps a week).
    assert DeltaTable(path, version=before.version()).to_pyarrow_table().num_rows == 3000
    doc = json.loads((tmp_path / "streams/tx/_metadata.json").read_text())
    assert doc["total_records"] == 3000
    assert sum(len(p["files"]) for p in doc["partitions"]) == len(days)
    # The summary, naming delta-rs's own files now, loads again; the next run appends to it.
    assert ex.export(f, NOW + dt.timedelta(minutes=1)).rows == 0
    assert DeltaTable(path).to_pyarrow_table().num_rows == 3000


def test_a_compaction_killed_after_a_day_loses_and_doubles_nothing(static: Sandbox,
                                                                   tmp_path: Path) -> None:
    """kill -9 (failpoint) right after one day's optimize commit, then the compaction again:
    every row once (ids, count, exact sum), the rest of the days compacted by the rerun."""
    import os
    import signal
    import subprocess
    import sys

    config = tmp_path / "lakeexportd.yaml"
    config.write_text(f"""
ksqldb: {{url: "{static.url}", max_retries: 0}}
lake: {{root: "{tmp_path / 'lake'}"}}
defaults: {{max_rows_per_file: 100, format: delta}}
feeds:
  - {{name: tx, source: TRANSACTION_FLATTENED, kind: stream}}
""")

    def cli(*args: str, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "LAKEEXPORTD_FAILPOINT"}
        if failpoint:
            env["LAKEEXPORTD_FAILPOINT"] = failpoint
        return subprocess.run([sys.executable, "-m", "lakeexportd", *args, "-c", str(config)],
                              env=env, capture_output=True, text=True, timeout=120)

    assert cli("export", "tx").returncode == 0, "export failed"
    path = str(tmp_path / "lake/streams/tx")
    before = DeltaTable(path).to_pyarrow_table()
    killed = cli("compact", "tx", "--before", "2030-01-01",
                 failpoint="compact.delta_after_optimize")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    middle = DeltaTable(path)
    assert sum(h["operation"] == "OPTIMIZE" for h in middle.history()) == 1
    assert middle.to_pyarrow_table().num_rows == 3000
    rerun = cli("compact", "tx", "--before", "2030-01-01")
    assert rerun.returncode == 0, rerun.stderr
    after = DeltaTable(path)
    rows = after.to_pyarrow_table()
    assert sorted(rows.column("TRANSACTION_ID").to_pylist()) == \
        sorted(before.column("TRANSACTION_ID").to_pylist())
    assert sum(r["AMOUNT"] for r in rows.select(["AMOUNT"]).to_pylist()) == \
        sum(r["AMOUNT"] for r in before.select(["AMOUNT"]).to_pylist())
    per_day: dict[tuple[int, int, int], int] = {}
    for r in pa.table(after.get_add_actions(flatten=True)).to_pylist():
        day = (r["partition.year"], r["partition.month"], r["partition.day"])
        per_day[day] = per_day.get(day, 0) + 1
    assert set(per_day.values()) == {1}
    verify = cli("verify", "tx")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_start_now_feed_begins_at_its_first_run(fresh: Sandbox, tmp_path: Path) -> None:
    """`start: now` skips the history: the first run commits only its watermark (no table yet),
    the next exports just the rows after it."""
    ex = exporter(fresh.url, tmp_path)
    f = delta_feed("tx", "TRANSACTION_FLATTENED", settle_delay=0.0, start="now")
    first = ex.export(f, NOW)
    assert first.rows == 0 and first.watermark_ms is not None
    assert not (tmp_path / "streams/tx/_delta_log").exists()
    fresh.generate(15, (first.watermark_ms + 1, first.watermark_ms + 500))
    second = ex.export(f, NOW + dt.timedelta(minutes=1))
    assert second.rows == 15
    table = DeltaTable(str(tmp_path / "streams/tx"))
    assert table.to_pyarrow_table().num_rows == 15
    assert table.transaction_version(APP.format("tx")) == second.watermark_ms


def test_files_carry_rowtime_statistics_readers_prune_by(static: Sandbox, tmp_path: Path) -> None:
    """Each add action's min/max ROWTIME is that file's own (read back from the file), and a
    ROWTIME range read through the log's statistics gives exactly the sandbox's rows in it."""
    import pyarrow.parquet as pq

    exporter(static.url, tmp_path).export(
        delta_feed("tx", "TRANSACTION_FLATTENED", max_rows_per_file=250), NOW)
    path = tmp_path / "streams/tx"
    table = DeltaTable(str(path))
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    assert len(actions) > 5
    for action in actions:
        stamps = pq.read_table(path / action["path"], columns=["ROWTIME"]).column(0).to_pylist()
        assert (action["min.ROWTIME"], action["max.ROWTIME"], action["num_records"]) == \
            (min(stamps), max(stamps), len(stamps))
    rowtimes = sorted(r["ROWTIME"] for r in static.rows("TRANSACTION_FLATTENED"))
    low, high = rowtimes[len(rowtimes) // 3], rowtimes[2 * len(rowtimes) // 3]
    want = sum(low <= t <= high for t in rowtimes)
    got = pl.scan_delta(str(path)).filter(pl.col("ROWTIME").is_between(low, high)).collect()
    assert got.height == want
    read = table.to_pyarrow_table(filters=[("ROWTIME", ">=", low), ("ROWTIME", "<=", high)])
    assert read.num_rows == want
