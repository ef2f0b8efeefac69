"""DataLakeExporter against the sandbox over real HTTP: the lake contracts of DESIGN.md 3-5."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from lakecheck import NOW, assert_consistent, assert_exactly_once, exporter, feed, read_listed

from lakeexportd.audit.verify_source import check_stream
from lakeexportd.errors import (
    FeedError,
    FeedLocked,
    KsqlDBProtocolError,
    KsqlDBStreamError,
    LakeStateError,
    SchemaError,
)
from lakeexportd.export.exporter import DataLakeExporter
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.lake import layout
from lakeexportd.lake.locking import FeedLock
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import StreamMetadata, Window
from lakeexportd.sandbox import Sandbox

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def static() -> Iterator[Sandbox]:
    """A sandbox whose data never changes: 3,000 transactions over 5 days."""
    with Sandbox.start(seed=3, preload=3000, preload_days=5) as sb:
        yield sb


@pytest.fixture
def fresh() -> Iterator[Sandbox]:
    """A sandbox a test may change (faults, schema, new rows)."""
    with Sandbox.start(seed=5, preload=600, preload_days=3) as sb:
        yield sb


def wall_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def metadata(root: Path, kind: str, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((layout.feed_dir(root, kind, name) / "_metadata.json").read_text())  # type: ignore[arg-type]


@pytest.mark.parametrize("source", ["TRANSACTION_FLATTENED", "TRANSACTION_STREAM"])
def test_stream_rows_land_once_in_their_event_day(static: Sandbox, tmp_path: Path, source: str) -> None:
    """Every row lands exactly once, typed as ksqlDB declares, in the partition of its ROWTIME day."""
    name = source.lower()
    result = exporter(static.url, tmp_path).export(feed(name, source), NOW)
    truth = static.arrow(source)
    assert result.rows == truth.num_rows == 3000
    lake = read_listed(tmp_path, "stream", name)
    assert_exactly_once(lake, truth)
    assert_consistent(tmp_path, "stream", name)
    doc = MetadataStore().load(layout.feed_dir(tmp_path, "stream", name))
    assert isinstance(doc, StreamMetadata) and len(doc.partitions) >= 5
    for partition in doc.partitions:
        day = layout.partition_day(partition.path)
        for entry in partition.files:
            rowtimes = pq.read_table(tmp_path / "streams" / name / partition.path / entry.name, columns=["ROWTIME"])
            days = {dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date() for ms in rowtimes.column(0).to_pylist()}
            assert days == {day}
            assert entry.name == f"data_{NOW:%Y%m%d_%H%M%S}.parquet"


def test_each_run_exports_only_its_window_and_commits_the_watermark(fresh: Sandbox, tmp_path: Path) -> None:
    """Runs export ROWTIME in (watermark, now - settle_delay]; windows chain; rows land once."""
    ex = exporter(fresh.url, tmp_path)
    f = feed("tx", "TRANSACTION_FLATTENED", settle_delay=30.0)
    t0 = wall_now()
    first = ex.export(f, t0)
    wm0 = first.watermark_ms
    assert wm0 is not None and first.rows == 600
    fresh.generate(100, (wm0 + 1, wm0 + 20_000))  # inside the next window
    fresh.generate(40, (wm0 + 60_001, wm0 + 90_000))  # after it: the run after next
    second = ex.export(f, t0 + dt.timedelta(seconds=60))
    assert (second.window_from_ms, second.watermark_ms, second.rows) == (wm0, wm0 + 60_000, 100)
    third = ex.export(f, t0 + dt.timedelta(seconds=600))
    assert third.rows == 40
    empty = ex.export(f, t0 + dt.timedelta(seconds=600))
    assert empty.rows == 0 and empty.files == 0 and empty.watermark_ms == third.watermark_ms
    assert_exactly_once(read_listed(tmp_path, "stream", "tx"), fresh.arrow("TRANSACTION_FLATTENED"))
    exports = metadata(tmp_path, "stream", "tx")["exports"]
    windows = [(e["window"]["from_ms"], e["window"]["to_ms"]) for e in exports]
    assert windows[0][0] is None
    assert all(prev[1] == cur[0] for prev, cur in zip(windows, windows[1:]))
    assert metadata(tmp_path, "stream", "tx")["watermark"] == {"rowtime_ms": third.watermark_ms}


@pytest.mark.parametrize(("source", "declared", "actual"), [
    ("USER_SUMMARY", "stream", "TABLE"), ("TRANSACTION_FLATTENED", "table", "STREAM"),
])
def test_a_feed_whose_kind_is_not_the_sources_fails_naming_both(
    static: Sandbox, tmp_path: Path, source: str, declared: str, actual: str
) -> None:
    """kind: stream on a TABLE (or the reverse) is a feed error before anything is written."""
    with pytest.raises(FeedError, match=f"declares kind '{declared}', but ksqlDB says {source} is a {actual}"):
        exporter(static.url, tmp_path).export(feed("f", source, kind=declared), NOW)
    assert not list(tmp_path.rglob("*.parquet"))


def test_start_now_skips_the_history(static: Sandbox, tmp_path: Path) -> None:
    """A feed with start: now commits its first watermark without exporting old rows."""
    result = exporter(static.url, tmp_path).export(feed("tx", "TRANSACTION_FLATTENED", start="now"), NOW)
    assert result.rows == 0 and result.watermark_ms == layout_ms(NOW) - 30_000
    assert metadata(tmp_path, "stream", "tx")["total_records"] == 0


def test_start_now_history_is_not_reported_as_late_rows(static: Sandbox, tmp_path: Path) -> None:
    """The skipped history is an empty window: verify --source finds no late rows in it."""
    ex = exporter(static.url, tmp_path)
    ex.export(feed("tx", "TRANSACTION_FLATTENED", start="now"), NOW)
    doc = MetadataStore().load(tmp_path / "streams/tx")
    assert isinstance(doc, StreamMetadata)
    upper = layout_ms(NOW) - 30_000
    assert [(e.window.from_ms, e.window.to_ms) for e in doc.exports if e.window] == [(upper, upper)]
    check = check_stream(ex.client, tmp_path, doc)
    assert check.skipped and not check.windows


def layout_ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_event_time_column_and_timezone_choose_the_partition(static: Sandbox, tmp_path: Path) -> None:
    """With event_time and timezone set, a row's partition is its local calendar day."""
    tz = "Pacific/Auckland"
    f = feed("tx", "TRANSACTION_FLATTENED", event_time="TRANSACTION_TIME", timezone=tz)
    exporter(static.url, tmp_path).export(f, NOW)
    doc = MetadataStore().load(layout.feed_dir(tmp_path, "stream", "tx"))
    assert isinstance(doc, StreamMetadata)
    zone = layout.zone(tz)
    for partition in doc.partitions:
        for entry in partition.files:
            times = pq.read_table(tmp_path / "streams/tx" / partition.path / entry.name).column("TRANSACTION_TIME")
            assert {t.astimezone(zone).date() for t in times.to_pylist()} == {layout.partition_day(partition.path)}
    assert_exactly_once(read_listed(tmp_path, "stream", "tx"), static.arrow("TRANSACTION_FLATTENED"))


def test_large_runs_split_into_parts_and_lru_closes_partitions(static: Sandbox, tmp_path: Path) -> None:
    """Past max_rows_per_file or max_open_partitions a partition gets _partNNNN files; rows stay once."""
    f = feed("tx", "TRANSACTION_FLATTENED", max_rows_per_file=150, max_open_partitions=1, batch_size=97)
    exporter(static.url, tmp_path).export(f, NOW)
    names = [p.name for p in (tmp_path / "streams/tx").rglob("*.parquet")]
    assert any("_part0002" in n for n in names)
    assert all(pq.ParquetFile(p).metadata.num_rows <= 150 for p in (tmp_path / "streams/tx").rglob("*.parquet"))
    assert_exactly_once(read_listed(tmp_path, "stream", "tx"), static.arrow("TRANSACTION_FLATTENED"))
    assert_consistent(tmp_path, "stream", "tx")


def test_same_second_runs_get_a_collision_suffix(fresh: Sandbox, tmp_path: Path) -> None:
    """Two runs that start in the same second write data_..._01.parquet beside the first file."""
    ex = exporter(fresh.url, tmp_path)
    f = feed("tx", "TRANSACTION_FLATTENED", settle_delay=0.0)
    t1 = dt.datetime(2030, 1, 1, 12, 0, 0, 100_000, tzinfo=dt.UTC)
    fresh.generate(3, (layout_ms(t1) - 3_600_000, layout_ms(t1) - 3_500_000))  # same day as below
    first = ex.export(f, t1)
    assert first.watermark_ms is not None
    fresh.generate(5, (first.watermark_ms + 1, first.watermark_ms + 300))
    second = ex.export(f, t1 + dt.timedelta(milliseconds=500))
    assert second.rows == 5
    names = {p.name for p in (tmp_path / "streams/tx").rglob("*.parquet")}
    assert "data_20300101_120000_01.parquet" in names and "data_20300101_120000.parquet" in names
    assert_consistent(tmp_path, "stream", "tx")


def test_table_versions_are_kept_pruned_and_never_reused(static: Sandbox, tmp_path: Path) -> None:
    """Each run adds version=vN; the newest retention_versions stay; numbers keep growing."""
    ex = exporter(static.url, tmp_path)
    f = feed("totals", "PAYMENT_TOTALS", kind="table", retention_versions=3)
    for i in range(5):
        result = ex.export(f, NOW + dt.timedelta(minutes=i))
        assert result.version == i + 1
    folder = tmp_path / "tables/totals"
    assert sorted(p.name for p in folder.glob("version=v*")) == ["version=v3", "version=v4", "version=v5"]
    doc = metadata(tmp_path, "table", "totals")
    assert [v["version"] for v in doc["versions"]] == [3, 4, 5]
    assert (doc["current_version"], doc["last_version"], doc["mode"]) == (5, 5, "overwrite")
    assert ex.export(f, NOW + dt.timedelta(hours=1)).version == 6
    assert_consistent(tmp_path, "table", "totals")
    assert not (tmp_path / ".staging/totals").exists() or not any((tmp_path / ".staging/totals").iterdir())


@pytest.mark.parametrize("source", ["USER_SUMMARY", "PAYMENT_TOTALS", "PRODUCT_COUNTS"])
def test_table_snapshot_equals_the_table(static: Sandbox, tmp_path: Path, source: str) -> None:
    """The current version holds exactly the table's rows, typed as ksqlDB declares."""
    name = source.lower()
    exporter(static.url, tmp_path).export(feed(name, source, kind="table"), NOW)
    truth = static.arrow(source).drop_columns(["ROWTIME"])
    lake = read_listed(tmp_path, "table", name)
    key = truth.column_names[0]
    assert lake.schema.equals(truth.schema, check_metadata=False)
    assert lake.sort_by(key).to_pylist() == truth.sort_by(key).to_pylist()
    if source == "PAYMENT_TOTALS":
        flat = static.arrow("TRANSACTION_STREAM")
        assert sum(lake.column("TRANSACTION_COUNT").to_pylist()) == flat.num_rows
        assert sum(lake.column("TOTAL_AMOUNT").to_pylist()) == sum(flat.column("AMOUNT").to_pylist())


def test_empty_table_publishes_a_readable_version(fresh: Sandbox, tmp_path: Path) -> None:
    """A table with no rows still gets a version with a zero-row file carrying the schema."""
    exporter(fresh.url, tmp_path).export(feed("blk", "TRANSACTION_BLACKLISTED"), NOW)  # stream: maybe empty
    with Sandbox.start(seed=1, preload=0) as empty:
        exporter(empty.url, tmp_path).export(feed("users", "USER_SUMMARY", kind="table"), NOW)
    table = read_listed(tmp_path, "table", "users")
    assert table.num_rows == 0 and "TOTAL_AMOUNT" in table.column_names


def test_metadata_document_follows_the_contract(static: Sandbox, tmp_path: Path) -> None:
    """_metadata.json has the fixed keys, and totals equal the sizes of the files on disk."""
    ex = exporter(static.url, tmp_path)
    ex.export(feed("tx", "TRANSACTION_FLATTENED"), NOW)
    ex.export(feed("users", "USER_SUMMARY", kind="table"), NOW)
    doc = metadata(tmp_path, "stream", "tx")
    for key in ("format_version", "source", "feed", "kind", "mode", "last_export", "last_status",
                "total_records", "total_size_bytes", "total_size_mb", "schema", "watermark", "partitions", "exports"):
        assert key in doc, key
    assert (doc["format_version"], doc["kind"], doc["mode"], doc["last_status"]) == (1, "stream", "append", "success")
    on_disk = sum(p.stat().st_size for p in (tmp_path / "streams/tx").rglob("*.parquet"))
    assert doc["total_size_bytes"] == on_disk == sum(p["size_bytes"] for p in doc["partitions"])
    assert doc["total_size_mb"] == round(on_disk / 1_048_576, 1)
    assert doc["total_records"] == 3000
    assert {"name": "AMOUNT", "ksql_type": "DECIMAL(10, 2)", "arrow_type": "decimal128(10, 2)"} in doc["schema"]
    assert doc["last_export"].endswith("Z") and doc["exports"][-1]["window"]["to_ms"] == doc["watermark"]["rowtime_ms"]
    table = metadata(tmp_path, "table", "users")
    assert table["mode"] == "overwrite" and "partitions" not in table and "watermark" not in table
    users = len(set(static.arrow("TRANSACTION_FLATTENED").column("USER_ID").to_pylist()))
    assert table["total_records"] == table["versions"][-1]["records"] == users
    assert table["versions"][-1]["path"] == "version=v1"


def test_added_column_is_accepted_and_recorded(fresh: Sandbox, tmp_path: Path) -> None:
    """A column added to the source is written in new files and recorded in schema_history."""
    ex = exporter(fresh.url, tmp_path)
    f = feed("tx", "TRANSACTION_FLATTENED", settle_delay=0.0)
    t0 = wall_now()
    first = ex.export(f, t0)
    ex.client.ksql("ALTER STREAM TRANSACTION_FLATTENED ADD COLUMN NOTE STRING;")
    assert first.watermark_ms is not None
    fresh.generate(20, (first.watermark_ms + 1, first.watermark_ms + 500))
    second = ex.export(f, t0 + dt.timedelta(seconds=1))
    assert second.rows == 20
    doc = metadata(tmp_path, "stream", "tx")
    assert doc["schema"][-1] == {"name": "NOTE", "ksql_type": "STRING", "arrow_type": "string"}
    assert doc["schema_history"][-1]["added"] == ["NOTE"]
    import duckdb

    with_note = [p for p in (tmp_path / "streams/tx").rglob("*.parquet") if "NOTE" in pq.read_schema(p).names]
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in with_note) == 20
    count = duckdb.sql(
        f"select count(*), count(NOTE), count(*) filter (where NOTE is null) "
        f"from read_parquet('{tmp_path}/streams/tx/**/*.parquet', union_by_name=true)"
    ).fetchall()
    assert count == [(620, 0, 620)]  # the sandbox leaves the new column null


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"action": "change_type", "column": "QUANTITY", "type": "BIGINT"}, "QUANTITY changed type from INTEGER to BIGINT"),
        ({"action": "drop", "column": "CITY"}, "CITY (STRING) was removed"),
    ],
)
def test_incompatible_schema_change_fails_and_writes_nothing(fresh: Sandbox, tmp_path: Path, change: dict, expected: str) -> None:  # type: ignore[type-arg]
    """A retyped or removed column fails the feed, naming column and types; nothing is written."""
    import httpx

    ex = exporter(fresh.url, tmp_path)
    f = feed("tx", "TRANSACTION_FLATTENED")
    ex.export(f, wall_now())
    before = sorted(p.name for p in (tmp_path / "streams/tx").rglob("*.parquet"))
    httpx.post(f"{fresh.url}/_sandbox/schema", json={"source": "TRANSACTION_FLATTENED", **change}).raise_for_status()
    fresh.generate(10)
    with pytest.raises(SchemaError, match=re.escape(expected)) as info:
        ex.export(f, wall_now() + dt.timedelta(minutes=5))
    assert "feed 'tx'" in str(info.value)
    assert sorted(p.name for p in (tmp_path / "streams/tx").rglob("*.parquet")) == before
    doc = metadata(tmp_path, "stream", "tx")
    assert doc["last_status"] == "failed" and expected in doc["exports"][-1]["error"]
    assert_consistent(tmp_path, "stream", "tx")


@pytest.mark.parametrize(
    ("security", "dirs", "files"), [("raw", 0o750, 0o640), ("anonymized", 0o755, 0o644), ("aggregated", 0o755, 0o644)]
)
def test_security_level_sets_permissions(static: Sandbox, tmp_path: Path, security: str, dirs: int, files: int) -> None:
    """raw feeds get 0750/0640, anonymized and aggregated 0755/0644, metadata included."""
    ex = exporter(static.url, tmp_path)
    ex.export(feed("tx", "TRANSACTION_ANONYMIZED", security=security), NOW)
    ex.export(feed("users", "USER_SUMMARY", kind="table", security=security), NOW)
    for folder in (tmp_path / "streams/tx", tmp_path / "tables/users"):
        for path in [folder, *folder.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            if path.name == ".lock":
                continue
            assert mode == (dirs if path.is_dir() else files), (path, oct(mode))


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "error_after_rows", "rows": 250}, KsqlDBStreamError),
        ({"kind": "cut_after_rows", "rows": 250}, KsqlDBStreamError),
        ({"kind": "malformed_line", "rows": 100}, KsqlDBProtocolError),
        ({"kind": "wrong_column_count", "rows": 100}, KsqlDBProtocolError),
    ],
)
def test_broken_answer_publishes_nothing_and_the_next_run_recovers(
    fresh: Sandbox, tmp_path: Path, fault: dict, error: type  # type: ignore[type-arg]
) -> None:
    """A broken answer fails the run: no file published, watermark kept; the next run is exact."""
    ex = exporter(fresh.url, tmp_path)
    f = feed("tx", "TRANSACTION_FLATTENED")
    fresh.inject(path="/query-stream", **fault)
    with pytest.raises(error):
        ex.export(f, NOW)
    assert not list((tmp_path / "streams/tx").rglob("*.parquet"))
    doc = metadata(tmp_path, "stream", "tx")
    assert doc["last_status"] == "failed" and doc.get("watermark") in (None, {"rowtime_ms": None})
    ex.export(f, NOW)
    assert_exactly_once(read_listed(tmp_path, "stream", "tx"), fresh.arrow("TRANSACTION_FLATTENED"))
    assert_consistent(tmp_path, "stream", "tx")


def test_second_writer_waits_then_skips(static: Sandbox, tmp_path: Path) -> None:
    """While another process holds a feed's lock, an export gives up with FeedLocked."""
    ex = exporter(static.url, tmp_path)
    f = feed("tx", "TRANSACTION_FLATTENED")
    started = time.monotonic()
    with FeedLock(layout.feed_dir(tmp_path, "stream", "tx"), feed="tx", wait=0):
        with pytest.raises(FeedLocked, match="feed 'tx' is locked"):
            ex.export(f, NOW)
    assert 1.5 < time.monotonic() - started < 10
    assert not list((tmp_path / "streams/tx").rglob("*.parquet"))


def test_corrupted_metadata_fails_clearly_and_is_never_overwritten(static: Sandbox, tmp_path: Path) -> None:
    """An unreadable _metadata.json stops the feed with a clear error and stays byte-identical."""
    ex = exporter(static.url, tmp_path)
    f = feed("tx", "TRANSACTION_FLATTENED")
    ex.export(f, NOW)
    path = tmp_path / "streams/tx/_metadata.json"
    path.write_text(path.read_text()[:-40])
    damaged = path.read_bytes()
    with pytest.raises(LakeStateError, match="will not overwrite.*repair --rebuild tx"):
        ex.export(f, NOW + dt.timedelta(minutes=1))
    assert path.read_bytes() == damaged


def _files_with_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}


def test_first_run_commits_an_empty_document_before_any_data(fresh: Sandbox, tmp_path: Path) -> None:
    """A feed's document exists before its first file, so data never sits in a folder without one."""
    ex = exporter(fresh.url, tmp_path)
    f = feed("tx", "TRANSACTION_FLATTENED")
    commits: list[int] = []
    original = ex.store.commit

    def spy(feed_dir: Path, doc, **kw) -> None:  # type: ignore[no-untyped-def]
        commits.append(len(list(feed_dir.rglob("*.parquet"))))
        original(feed_dir, doc, **kw)

    ex.store.commit = spy  # type: ignore[method-assign]
    ex.export(f, NOW)
    assert commits[0] == 0 and commits[-1] > 0 and len(commits) == 2


@pytest.mark.parametrize("kind", ["stream", "table"])
def test_missing_metadata_stops_the_feed_and_deletes_nothing(static: Sandbox, tmp_path: Path, kind: str) -> None:
    """Data without _metadata.json is never cleaned: export and repair fail naming --rebuild."""
    ex = exporter(static.url, tmp_path)
    f = feed("tx", "TRANSACTION_FLATTENED") if kind == "stream" else feed("users", "USER_SUMMARY", kind="table")
    for minutes in range(3):
        ex.export(f, NOW + dt.timedelta(minutes=minutes))
    folder = layout.feed_dir(tmp_path, kind, f.name)  # type: ignore[arg-type]
    before = _files_with_bytes(folder)
    assert before
    (folder / "_metadata.json").unlink()
    with pytest.raises(LakeStateError, match=f"no _metadata.json.*repair --rebuild {f.name}"):
        ex.export(f, NOW + dt.timedelta(minutes=5))
    with pytest.raises(LakeStateError, match="no _metadata.json"):
        ex.repair(f)
    assert _files_with_bytes(folder) == before
    assert not (folder / "_metadata.json").exists()


def test_rebuild_restores_a_lost_stream_document_and_runs_go_on_exactly_once(fresh: Sandbox, tmp_path: Path) -> None:
    """--rebuild lists every file with its footer rows and sets the watermark to the largest ROWTIME."""
    ex = exporter(fresh.url, tmp_path)
    f = feed("tx", "TRANSACTION_FLATTENED")
    ex.export(f, NOW)
    folder = tmp_path / "streams/tx"
    old = metadata(tmp_path, "stream", "tx")
    (folder / "_metadata.json").unlink()
    shown: list[str] = []
    assert ex.rebuild(f, confirm=lambda lines: bool(shown.extend(lines))) is None
    assert not (folder / "_metadata.json").exists() and any("watermark" in line for line in shown)
    rebuilt = ex.rebuild(f, confirm=lambda lines: True)
    assert rebuilt is not None
    new = metadata(tmp_path, "stream", "tx")
    assert new["total_records"] == old["total_records"] == sum(pq.read_metadata(p).num_rows for p in folder.rglob("*.parquet"))
    assert new["total_size_bytes"] == old["total_size_bytes"]
    assert [(p["path"], [x["name"] for x in p["files"]]) for p in new["partitions"]] == [
        (p["path"], [x["name"] for x in p["files"]]) for p in old["partitions"]
    ]
    assert new["schema"] == old["schema"]
    largest = max(max(pq.read_table(p, columns=["ROWTIME"]).column(0).to_pylist()) for p in folder.rglob("*.parquet"))
    assert new["watermark"]["rowtime_ms"] == largest
    fresh.generate(40, (largest + 1, largest + 20_000))
    assert ex.export(f, NOW + dt.timedelta(minutes=1)).rows == 40
    assert_exactly_once(read_listed(tmp_path, "stream", "tx"), fresh.arrow("TRANSACTION_FLATTENED"))
    assert_consistent(tmp_path, "stream", "tx")
    with pytest.raises(LakeStateError, match="exists"):
        ex.rebuild(f, confirm=lambda lines: True)


def test_rebuild_restores_table_versions_and_never_reuses_a_number(static: Sandbox, tmp_path: Path) -> None:
    """A rebuilt table document names the newest version current; the next run makes a new number."""
    ex = exporter(static.url, tmp_path)
    t = feed("users", "USER_SUMMARY", kind="table", retention_versions=3)
    for minutes in range(5):
        ex.export(t, NOW + dt.timedelta(minutes=minutes))
    old = metadata(tmp_path, "table", "users")
    (tmp_path / "tables/users/_metadata.json").unlink()
    assert ex.rebuild(t, confirm=lambda lines: True) is not None
    new = metadata(tmp_path, "table", "users")
    assert new["current_version"] == old["current_version"] == 5
    assert [v["version"] for v in new["versions"]] == [v["version"] for v in old["versions"]] == [3, 4, 5]
    assert new["total_records"] == old["total_records"]
    ex.export(t, NOW + dt.timedelta(minutes=9))
    assert metadata(tmp_path, "table", "users")["current_version"] == 6
    assert_consistent(tmp_path, "table", "users")


def test_unlisted_files_are_removed_by_the_next_run_and_by_repair(static: Sandbox, tmp_path: Path) -> None:
    """Files from an interrupted run (temps, unlisted data, versions) are removed, listed ones kept."""
    ex = exporter(static.url, tmp_path)
    f = feed("tx", "TRANSACTION_FLATTENED")
    t = feed("users", "USER_SUMMARY", kind="table")
    ex.export(f, NOW)
    ex.export(t, NOW)
    partition = next((tmp_path / "streams/tx").glob("year=*/month=*/day=*"))
    stray = [partition / "data_20991231_000000.parquet", partition / ".data_x.parquet.tmp"]
    for path in stray:
        path.write_bytes(b"PAR1")
    (tmp_path / "tables/users/version=v9").mkdir()
    assert sorted(ex.repair(f, dry_run=True).removed) == sorted(stray)
    assert all(p.exists() for p in stray)
    assert sorted(ex.repair(f).removed) == sorted(stray)
    assert ex.repair(t).removed == [tmp_path / "tables/users/version=v9"]
    partition.joinpath("data_20991231_000000.parquet").write_bytes(b"PAR1")
    ex.export(f, NOW + dt.timedelta(minutes=1))
    assert not partition.joinpath("data_20991231_000000.parquet").exists()
    assert_consistent(tmp_path, "stream", "tx")
    assert_consistent(tmp_path, "table", "users")


def _yes(lines: list[str]) -> bool:
    return True


def test_backfill_brings_back_a_lost_file_and_a_late_row_exactly_once(fresh: Sandbox, tmp_path: Path) -> None:
    """A deleted file and a late row of one exported window: backfill of that window re-exports
    it from ksqlDB, keeps rows outside it, and the lake holds every source row once."""
    ex = exporter(fresh.url, tmp_path)
    f = feed("tx", "TRANSACTION_FLATTENED", settle_delay=30.0)
    t0 = wall_now()
    wm0 = ex.export(f, t0).watermark_ms
    assert wm0 is not None
    fresh.generate(100, (wm0 + 1, wm0 + 50_000))
    second = ex.export(f, t0 + dt.timedelta(seconds=60))
    assert second.rows == 100
    stamp = f"data_{t0 + dt.timedelta(seconds=60):%Y%m%d_%H%M%S}"
    lost = next(p for p in (tmp_path / "streams/tx").rglob("*.parquet") if p.name.startswith(stamp))
    lost.unlink()
    fresh.generate(1, (wm0 + 10, wm0 + 20))  # late: after its window was exported
    window = Window(wm0, second.watermark_ms)  # type: ignore[arg-type]
    shown: list[str] = []
    assert ex.backfill(f, window, t0 + dt.timedelta(seconds=90), confirm=lambda lines: bool(shown.extend(lines))) is None
    assert any("drop missing" in line for line in shown)
    result = ex.backfill(f, window, t0 + dt.timedelta(seconds=90), confirm=_yes)
    assert result is not None and result.window_rows == 101
    assert_exactly_once(read_listed(tmp_path, "stream", "tx"), fresh.arrow("TRANSACTION_FLATTENED"))
    assert_consistent(tmp_path, "stream", "tx")
    doc = metadata(tmp_path, "stream", "tx")
    assert doc["watermark"]["rowtime_ms"] == second.watermark_ms
    assert doc["exports"][-1]["window"] == {"from_ms": wm0, "to_ms": second.watermark_ms}
    assert ex.export(f, t0 + dt.timedelta(seconds=120)).rows == 0  # nothing twice afterwards


def test_backfill_of_part_of_a_files_rows_keeps_the_rest(static: Sandbox, tmp_path: Path) -> None:
    """A window inside one run: files are rewritten without it, the window comes again, once."""
    ex = exporter(static.url, tmp_path)
    f = feed("tx", "TRANSACTION_FLATTENED")
    ex.export(f, NOW)
    rowtimes = sorted(static.arrow("TRANSACTION_FLATTENED").column("ROWTIME").to_pylist())
    window = Window(rowtimes[1000], rowtimes[2000])
    result = ex.backfill(f, window, NOW + dt.timedelta(minutes=1), confirm=_yes)
    assert result is not None and result.window_rows == 1000 and 1000 <= result.rows < 3000
    assert_exactly_once(read_listed(tmp_path, "stream", "tx"), static.arrow("TRANSACTION_FLATTENED"))
    assert_consistent(tmp_path, "stream", "tx")


def test_backfill_refuses_what_it_cannot_do_exactly_once(static: Sandbox, tmp_path: Path) -> None:
    """A window past the watermark, or one that does not cover a missing file's run, is refused
    with the window to use; nothing changes."""
    ex = exporter(static.url, tmp_path)
    f = feed("tx", "TRANSACTION_FLATTENED")
    mark = ex.export(f, NOW).watermark_ms
    assert mark is not None
    with pytest.raises(FeedError, match="after the watermark"):
        ex.backfill(f, Window(0, mark + 1), NOW, confirm=_yes)
    victim = next((tmp_path / "streams/tx").rglob("*.parquet"))
    victim.unlink()
    before = _files_with_bytes(tmp_path / "streams/tx")
    with pytest.raises(FeedError, match=f"--from -1 --to {mark}"):
        ex.backfill(f, Window(0, mark), NOW, confirm=_yes)
    assert _files_with_bytes(tmp_path / "streams/tx") == before
    assert ex.backfill(f, Window(-1, mark), NOW + dt.timedelta(minutes=1), confirm=_yes) is not None
    assert_exactly_once(read_listed(tmp_path, "stream", "tx"), static.arrow("TRANSACTION_FLATTENED"))


def test_retention_days_drops_old_partitions_in_the_same_commit(static: Sandbox, tmp_path: Path) -> None:
    """Partitions older than retention_days leave the metadata and the disk; totals follow."""
    ex = exporter(static.url, tmp_path)
    latest = max(static.arrow("TRANSACTION_FLATTENED").column("ROWTIME").to_pylist())
    now = dt.datetime.fromtimestamp(latest / 1000 + 3600, dt.UTC)
    ex.export(feed("tx", "TRANSACTION_FLATTENED", settle_delay=0.0), now)
    days_before = len(metadata(tmp_path, "stream", "tx")["partitions"])
    ex.export(feed("tx", "TRANSACTION_FLATTENED", settle_delay=0.0, retention_days=2), now)
    doc = metadata(tmp_path, "stream", "tx")
    cutoff = layout.retention_cutoff(now, 2)
    assert days_before > len(doc["partitions"]) >= 1
    assert all(layout.partition_day(p["path"]) >= cutoff for p in doc["partitions"])
    lake = read_listed(tmp_path, "stream", "tx")
    assert doc["total_records"] == lake.num_rows
    oldest = pc.min(lake.column("ROWTIME")).as_py()
    assert dt.datetime.fromtimestamp(oldest / 1000, dt.UTC).date() >= cutoff
    assert_consistent(tmp_path, "stream", "tx")


def test_a_file_lakeexportd_does_not_write_is_never_deleted(static: Sandbox, tmp_path: Path) -> None:
    """An operator's file in an unlisted version folder, in a version being pruned and in an
    expired day partition stays, with its folder; the table's next run takes a new number and
    the lake stays consistent around them."""
    ex = exporter(static.url, tmp_path)
    users = feed("users", "USER_SUMMARY", kind="table", retention_versions=1)
    ex.export(users, NOW)
    folder = tmp_path / "tables/users"
    (folder / "version=v1" / "NOTES.txt").write_text("kept by the operator")  # pruned next
    (folder / "version=v2").mkdir()  # an interrupted run's unlisted version, with a note
    (folder / "version=v2" / "README").write_text("not lakeexportd's")
    assert ex.export(users, NOW + dt.timedelta(minutes=1)).version == 3
    assert (folder / "version=v1" / "NOTES.txt").read_text() == "kept by the operator"
    assert not list((folder / "version=v1").glob("*.parquet"))  # its snapshot files went
    assert (folder / "version=v2" / "README").read_text() == "not lakeexportd's"
    assert [v["version"] for v in metadata(tmp_path, "table", "users")["versions"]] == [3]
    assert read_listed(tmp_path, "table", "users").num_rows == static.arrow("USER_SUMMARY").num_rows

    latest = max(static.arrow("TRANSACTION_FLATTENED").column("ROWTIME").to_pylist())
    now = dt.datetime.fromtimestamp(latest / 1000 + 3600, dt.UTC)
    ex.export(feed("tx", "TRANSACTION_FLATTENED", settle_delay=0.0), now)
    oldest = metadata(tmp_path, "stream", "tx")["partitions"][0]["path"]
    note = tmp_path / "streams/tx" / oldest / "checked.txt"
    note.write_text("audited")
    ex.export(feed("tx", "TRANSACTION_FLATTENED", settle_delay=0.0, retention_days=2), now)
    assert oldest not in [p["path"] for p in metadata(tmp_path, "stream", "tx")["partitions"]]
    assert note.read_text() == "audited"
    assert not list(note.parent.glob("*.parquet"))
    assert_consistent(tmp_path, "stream", "tx")


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", ""])
def test_feed_names_cannot_escape_the_lake(tmp_path: Path, name: str) -> None:
    """A feed name that would leave its folder is refused before any path is built."""
    with pytest.raises((ValueError, LakeStateError)):
        layout.feed_dir(tmp_path, "stream", name)


def test_lake_files_never_get_world_writable(static: Sandbox, tmp_path: Path) -> None:
    """Whatever the umask, modes are set explicitly."""
    old = os.umask(0)
    try:
        exporter(static.url, tmp_path).export(feed("tx", "TRANSACTION_FLATTENED"), NOW)
    finally:
        os.umask(old)
    assert all(not stat.S_IMODE(p.stat().st_mode) & 0o002 for p in (tmp_path / "streams").rglob("*"))


def test_feed_folder_symlinked_outside_the_lake_is_refused(static: Sandbox, tmp_path: Path) -> None:
    """A feed folder that is a symlink leaving the lake is refused before anything is written."""
    outside = tmp_path / "outside"
    outside.mkdir()
    lake = tmp_path / "lake"
    (lake / "streams").mkdir(parents=True)
    (lake / "streams/tx").symlink_to(outside)
    with pytest.raises(LakeStateError, match="outside"):
        exporter(static.url, lake).export(feed("tx", "TRANSACTION_FLATTENED"), NOW)
    assert list(outside.iterdir()) == []


def test_lake_root_may_itself_be_a_symlink(static: Sandbox, tmp_path: Path) -> None:
    """Pointing the whole lake at another disk with a symlink is fine."""
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "lake").symlink_to(disk)
    exporter(static.url, tmp_path / "lake").export(feed("tx", "TRANSACTION_FLATTENED"), NOW)
    assert list(disk.glob("streams/tx/year=*/month=*/day=*/*.parquet"))


def test_a_run_whose_lock_is_lost_commits_nothing(static: Sandbox, tmp_path: Path) -> None:
    """The fence before every commit: a lock no longer held (a lease not renewed in time)
    stops the run before its commit; nothing is published, the next run is exact."""
    from lakeexportd.lake.storage import Held, LocalStorage

    class Lost:
        def __init__(self, held: Held) -> None:
            self.held = held

        def holding(self) -> bool:
            return False

        def release(self) -> None:
            self.held.release()

    class Losing(LocalStorage):
        def try_lock(self, *args: Any, **kwargs: Any) -> Held | None:
            held = super().try_lock(*args, **kwargs)
            return None if held is None else Lost(held)

    client = KsqlDBClient(CurlTransport(static.url))
    try:
        losing = DataLakeExporter(client, tmp_path, lock_wait=2, store=MetadataStore(Losing()))
        with pytest.raises(LakeStateError, match="stops before its commit"):
            losing.export(feed("tx", "TRANSACTION_FLATTENED"), NOW)
    finally:
        client.close()
    assert not (tmp_path / "streams/tx/_metadata.json").exists()
    assert not list((tmp_path / "streams/tx").rglob("*.parquet"))
    exporter(static.url, tmp_path).export(feed("tx", "TRANSACTION_FLATTENED"), NOW)
    assert_exactly_once(read_listed(tmp_path, "stream", "tx"), static.arrow("TRANSACTION_FLATTENED"))
