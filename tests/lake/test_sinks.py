from __future__ import annotations

import datetime as dt
import errno
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakeexportd.errors import LakeStateError, SchemaError
from lakeexportd.failpoints import FAILPOINTS
from lakeexportd.ksqldb.types import arrow_schema, parse_type
from lakeexportd.lake import cleanup, layout
from lakeexportd.lake import metadata as md
from lakeexportd.lake.metadata_model import StreamMetadata
from lakeexportd.lake.parquet_writer import ParquetFile
from lakeexportd.lake.sinks import AppendSink, SnapshotSink

RUN = dt.datetime(2025, 1, 15, 12, 0, 0, tzinfo=dt.UTC)
DAY_MS = 86_400_000
JAN15 = 1736899200000  # 2025-01-15T00:00:00Z

ALL_TYPES = [
    ("B", "BOOLEAN"), ("I", "INTEGER"), ("L", "BIGINT"), ("D", "DOUBLE"),
    ("DEC", "DECIMAL(38, 10)"), ("S", "STRING"), ("BY", "BYTES"), ("TS", "TIMESTAMP"),
    ("DT", "DATE"), ("TM", "TIME"), ("ARR", "ARRAY<STRING>"), ("M", "MAP<STRING, INTEGER>"),
    ("ST", "STRUCT<`A` INTEGER, `B` ARRAY<DECIMAL(10, 2)>>"), ("ROWTIME", "BIGINT"),
]


def _schema(cols: list[tuple[str, str]]) -> pa.Schema:
    return arrow_schema([n for n, _ in cols], [parse_type(t) for _, t in cols])


def _all_types_batch(rowtimes: list[int]) -> pa.RecordBatch:
    schema = _schema(ALL_TYPES)
    n = len(rowtimes)
    values = {
        "B": [i % 2 == 0 for i in range(n)], "I": list(range(n)), "L": [2**40 + i for i in range(n)],
        "D": [i / 3 for i in range(n)],
        "DEC": [Decimal("1234567890123456789012345678.0123456789") - i for i in range(n)],
        "S": [f"s{i % 3}" if i % 5 else None for i in range(n)],
        "BY": [bytes([i % 256]) for i in range(n)], "TS": rowtimes, "DT": [i for i in range(n)],
        "TM": [i * 1000 for i in range(n)], "ARR": [["a", str(i)] for i in range(n)],
        "M": [[("k", i)] for i in range(n)],
        "ST": [{"A": i, "B": [Decimal("1.25")]} for i in range(n)], "ROWTIME": rowtimes,
    }
    return pa.RecordBatch.from_arrays(
        [pa.array(values[f.name], f.type) for f in schema], schema=schema
    )


FLAT = _schema([("ID", "BIGINT"), ("NAME", "STRING"), ("ROWTIME", "BIGINT")])


def _flat(rowtimes: list[int], start: int = 0) -> pa.RecordBatch:
    n = len(rowtimes)
    return pa.RecordBatch.from_arrays(
        [pa.array(range(start, start + n), pa.int64()),
         pa.array([f"n{i % 4}" for i in range(n)]), pa.array(rowtimes, pa.int64())],
        schema=FLAT,
    )


def _files(feed: Path) -> list[str]:
    return sorted(str(p.relative_to(feed)) for p in feed.rglob("*") if p.is_file())


def test_append_routes_all_types_and_reads_back_equal(tmp_path: Path) -> None:
    """Rows of every ksqlDB type land in their UTC day and read back equal, metadata kept."""
    feed = tmp_path / "streams" / "tx"
    rowtimes = [JAN15 + (i % 3) * DAY_MS + i for i in range(30)]
    batch = _all_types_batch(rowtimes)
    with AppendSink(feed, batch.schema, run_start=RUN) as sink:
        sink.write(batch)
        written = sink.finish()
    assert sorted(w.partition for w in written) == [
        "year=2025/month=01/day=15", "year=2025/month=01/day=16", "year=2025/month=01/day=17",
    ]
    assert all(w.name == "data_20250115_120000.parquet" for w in written)
    table = pa.Table.from_batches([batch])
    for w in written:
        got = pq.read_table(feed / w.partition / w.name)
        day = (JAN15 + DAY_MS * (int(w.partition[-2:]) - 15))
        mask = pa.array([day <= t < day + DAY_MS for t in rowtimes])
        expected = table.filter(mask)
        # Parquet names list children "element" (the compliant form Spark reads); same data.
        assert got.to_pylist() == expected.to_pylist()
        assert got.cast(table.schema).equals(expected, check_metadata=True)
        assert got.schema.field("DEC").type == pa.decimal128(38, 10)
        assert got.schema.field("ST").metadata[b"ksql_type"].startswith(b"STRUCT<")
        assert w.records == got.num_rows and w.size_bytes == (feed / w.partition / w.name).stat().st_size
        assert w.min_event_ms == min(t for t in rowtimes if day <= t < day + DAY_MS)


def test_parquet_is_snappy_with_statistics_and_dictionary(tmp_path: Path) -> None:
    """Column chunks are Snappy, carry statistics and use dictionary encoding."""
    feed = tmp_path / "f"
    sink = AppendSink(feed, FLAT, run_start=RUN)
    sink.write(_flat([JAN15 + i for i in range(1000)]))
    [w] = sink.finish()
    meta = pq.ParquetFile(feed / w.partition / w.name).metadata
    for i in range(meta.num_columns):
        col = meta.row_group(0).column(i)
        assert col.compression == "SNAPPY"
        assert col.statistics is not None and col.statistics.has_min_max
    assert any("DICTIONARY" in e for e in meta.row_group(0).column(1).encodings)


def test_row_groups_buffered_to_size(tmp_path: Path) -> None:
    """Small batches are buffered into row groups of row_group_rows, not one per batch."""
    feed = tmp_path / "f"
    sink = AppendSink(feed, FLAT, run_start=RUN, row_group_rows=1000)
    for k in range(25):
        sink.write(_flat([JAN15 + k * 100 + i for i in range(100)], start=k * 100))
    [w] = sink.finish()
    meta = pq.ParquetFile(feed / w.partition / w.name).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 500]


def test_partitions_in_feed_timezone_across_dst(tmp_path: Path) -> None:
    """Vectorised routing in Europe/Paris agrees with layout.partition_path on a DST day."""
    feed = tmp_path / "f"
    spring = int(dt.datetime(2025, 3, 29, 22, 0, tzinfo=dt.UTC).timestamp() * 1000)
    rowtimes = [spring + i * 15 * 60_000 for i in range(200)]  # two days and a bit
    sink = AppendSink(feed, FLAT, run_start=RUN, timezone="Europe/Paris")
    sink.write(_flat(rowtimes))
    written = sink.finish()
    got = {w.partition: w.records for w in written}
    expected: dict[str, int] = {}
    for t in rowtimes:
        key = layout.partition_path(t, "Europe/Paris")
        expected[key] = expected.get(key, 0) + 1
    assert got == expected and len(got) == 4


def test_timestamp_event_time_column(tmp_path: Path) -> None:
    """A TIMESTAMP column can be the event time."""
    schema = _schema([("TS", "TIMESTAMP"), ("V", "INTEGER")])
    batch = pa.RecordBatch.from_arrays(
        [pa.array([JAN15, JAN15 + DAY_MS], schema.field("TS").type), pa.array([1, 2], pa.int32())],
        schema=schema,
    )
    sink = AppendSink(tmp_path / "f", schema, run_start=RUN, event_time="TS")
    sink.write(batch)
    assert sorted(w.partition[-6:] for w in sink.finish()) == ["day=15", "day=16"]


def test_bad_event_time_and_schema_drift_rejected(tmp_path: Path) -> None:
    """A missing/non-time event column, nulls in it, or a batch of another schema are errors."""
    with pytest.raises(SchemaError, match="event_time"):
        AppendSink(tmp_path / "f", FLAT, run_start=RUN, event_time="NAME")
    sink = AppendSink(tmp_path / "f", FLAT, run_start=RUN)
    nulls = pa.RecordBatch.from_arrays(
        [pa.array([1], pa.int64()), pa.array(["x"]), pa.array([None], pa.int64())], schema=FLAT
    )
    with pytest.raises(SchemaError, match="null"):
        sink.write(nulls)
    other = pa.RecordBatch.from_pydict({"ID": pa.array([1], pa.int32())})
    with pytest.raises(SchemaError, match="one run must keep one schema"):
        sink.write(other)
    sink.abort()


def test_lru_closes_oldest_partition_and_reopens_as_part(tmp_path: Path) -> None:
    """With 2 open partitions, a third day closes the oldest; its later rows get _part0002."""
    feed = tmp_path / "f"
    sink = AppendSink(feed, FLAT, run_start=RUN, max_open_partitions=2)
    for day in (0, 1, 2, 0):
        sink.write(_flat([JAN15 + day * DAY_MS + i for i in range(10)]))
    names = sorted((w.partition[-6:], w.name, w.records) for w in sink.finish())
    assert names == [
        ("day=15", "data_20250115_120000_part0001.parquet", 10),
        ("day=15", "data_20250115_120000_part0002.parquet", 10),
        ("day=16", "data_20250115_120000.parquet", 10),
        ("day=17", "data_20250115_120000.parquet", 10),
    ]


def test_interleaved_days_do_not_thrash_lru(tmp_path: Path) -> None:
    """Batches touching more days than open slots close at most the missing days per batch."""
    sink = AppendSink(tmp_path / "f", FLAT, run_start=RUN, max_open_partitions=4)
    for k in range(20):
        sink.write(_flat([JAN15 + (i % 5) * DAY_MS + k * 100 + i for i in range(100)]))
    written = sink.finish()
    assert sum(w.records for w in written) == 2000
    assert len(written) <= 5 + 20


def test_rolls_files_past_max_rows_per_file(tmp_path: Path) -> None:
    """A partition past max_rows_per_file continues in _partNNNN files, no row lost."""
    feed = tmp_path / "f"
    sink = AppendSink(feed, FLAT, run_start=RUN, max_rows_per_file=40)
    sink.write(_flat([JAN15 + i for i in range(100)]))
    written = sink.finish()
    assert [(w.name, w.records) for w in written] == [
        ("data_20250115_120000_part0001.parquet", 40),
        ("data_20250115_120000_part0002.parquet", 40),
        ("data_20250115_120000_part0003.parquet", 20),
    ]
    ids = pl.read_parquet(feed / written[0].partition / "*.parquet")["ID"].sort().to_list()
    assert ids == list(range(100))


def test_collision_suffix_for_same_second_runs(tmp_path: Path) -> None:
    """A second run started in the same second gets _01 instead of overwriting."""
    feed = tmp_path / "f"
    for _ in range(2):
        sink = AppendSink(feed, FLAT, run_start=RUN)
        sink.write(_flat([JAN15]))
        sink.finish()
    assert _files(feed) == [
        "year=2025/month=01/day=15/data_20250115_120000.parquet",
        "year=2025/month=01/day=15/data_20250115_120000_01.parquet",
    ]


def test_temps_hidden_until_finish_and_abort_removes_them(tmp_path: Path) -> None:
    """Before finish only .tmp files exist; abort leaves no file and no new directory."""
    feed = tmp_path / "f"
    sink = AppendSink(feed, FLAT, run_start=RUN, max_open_partitions=1)
    sink.write(_flat([JAN15, JAN15 + DAY_MS]))
    names = [p.name for p in feed.rglob("*") if p.is_file()]
    assert len(names) == 2 and all(n.startswith(".data_") and n.endswith(".parquet.tmp") for n in names)
    sink.abort()
    assert not feed.exists()


@pytest.mark.parametrize(("security", "dmode", "fmode"), [("raw", 0o750, 0o640), ("aggregated", 0o755, 0o644)])
def test_permissions_follow_security(tmp_path: Path, security: str, dmode: int, fmode: int) -> None:
    """Directories and files get the security level's modes whatever the umask."""
    old = os.umask(0o077)
    try:
        feed = tmp_path / "streams" / "f"
        sink = AppendSink(feed, FLAT, run_start=RUN, security=security)  # type: ignore[arg-type]
        sink.write(_flat([JAN15]))
        [w] = sink.finish()
        snap = SnapshotSink(tmp_path, "t", FLAT, version=1, run_start=RUN, security=security)  # type: ignore[arg-type]
        [s] = snap.publish()
    finally:
        os.umask(old)
    assert (feed / w.partition / w.name).stat().st_mode & 0o777 == fmode
    for d in ("year=2025", "year=2025/month=01", "year=2025/month=01/day=15"):
        assert (feed / d).stat().st_mode & 0o777 == dmode
    vdir = tmp_path / "tables" / "t" / "version=v1"
    assert vdir.stat().st_mode & 0o777 == dmode
    assert (vdir / s.name).stat().st_mode & 0o777 == fmode


def test_snapshot_publishes_complete_version_with_parts(tmp_path: Path) -> None:
    """A snapshot is built in .staging and appears as version=vN with all its parts."""
    sink = SnapshotSink(tmp_path, "t", FLAT, version=3, run_start=RUN, max_rows_per_file=4)
    sink.write(_flat([JAN15 + i for i in range(10)]))
    staging = tmp_path / ".staging" / "t" / "version=v3"
    assert staging.is_dir() and not (tmp_path / "tables" / "t" / "version=v3").exists()
    written = sink.publish()
    vdir = tmp_path / "tables" / "t" / "version=v3"
    assert [(w.partition, w.name, w.records) for w in written] == [
        ("version=v3", f"snapshot_20250115_120000_part000{i}.parquet", n)
        for i, n in ((1, 4), (2, 4), (3, 2))
    ]
    assert sorted(os.listdir(vdir)) == [w.name for w in written]
    assert not staging.exists()
    assert pq.read_table(vdir).num_rows == 10


def test_empty_snapshot_has_schema(tmp_path: Path) -> None:
    """An empty table still publishes one zero-row file that carries the columns."""
    [w] = SnapshotSink(tmp_path, "t", FLAT, version=1, run_start=RUN).publish()
    assert w.name == "snapshot_20250115_120000.parquet" and w.records == 0
    table = pq.read_table(tmp_path / "tables" / "t" / "version=v1" / w.name)
    assert table.num_rows == 0 and table.schema.equals(FLAT, check_metadata=False)
    assert pl.read_parquet(tmp_path / "tables" / "t" / "version=v1" / "*.parquet").columns == [
        "ID", "NAME", "ROWTIME",
    ]


def test_snapshot_refuses_existing_version_dir(tmp_path: Path) -> None:
    """Publishing over an existing version dir is a LakeStateError, never a merge."""
    (tmp_path / "tables" / "t" / "version=v1").mkdir(parents=True)
    sink = SnapshotSink(tmp_path, "t", FLAT, version=1, run_start=RUN)
    with pytest.raises(LakeStateError, match="repair"):
        sink.publish()


def _table_run(root: Path, store: md.MetadataStore, retention: int) -> tuple[int, list[Path]]:
    feed = layout.feed_dir(root, "table", "t")
    doc = store.load(feed) or md.new_document("table", feed="t", source="T")
    assert isinstance(doc, md.TableMetadata)
    version = md.next_version(doc)
    written = SnapshotSink(root, "t", FLAT, version=version, run_start=RUN).publish()
    new, dropped = md.after_table_run(
        doc, record=md.ExportRecord(str(version), "a", "b", 0, "success"), version=version,
        files=written, columns=md.columns_of(FLAT, feed="t"), retention_versions=retention,
        now=RUN,
    )
    store.commit(feed, new)
    return version, cleanup.delete_versions(feed, dropped)


def test_versions_pruned_after_commit_and_never_reused(tmp_path: Path) -> None:
    """Retention keeps the newest N dirs; numbers keep growing after pruning."""
    store = md.MetadataStore()
    for expected in range(1, 6):
        version, _ = _table_run(tmp_path, store, retention=2)
        assert version == expected
    feed = tmp_path / "tables" / "t"
    assert sorted(p for p in os.listdir(feed) if p.startswith("version=")) == [
        "version=v4", "version=v5",
    ]
    doc = store.load(feed)
    assert isinstance(doc, md.TableMetadata)
    assert [v.version for v in doc.versions] == [4, 5] and doc.last_version == 5


def test_orphan_cleanup_stream(tmp_path: Path) -> None:
    """Unlisted data files, temps and empty dirs go; listed files, metadata and lock stay."""
    feed = tmp_path / "streams" / "f"
    store = md.MetadataStore()
    store.load(feed)
    sink = AppendSink(feed, FLAT, run_start=RUN)
    sink.write(_flat([JAN15]))
    written = sink.finish()
    doc = md.with_stream_files(md.StreamMetadata(feed="f", source="F"), written, watermark_ms=1)
    store.commit(feed, doc)
    orphan = AppendSink(feed, FLAT, run_start=RUN + dt.timedelta(seconds=1), max_open_partitions=1)
    orphan.write(_flat([JAN15 + 5, JAN15 + DAY_MS]))
    orphan.finish()
    stray = AppendSink(feed, FLAT, run_start=RUN)
    stray.write(_flat([JAN15 + 2 * DAY_MS]))  # left open: a temp in a new day dir
    (feed / ".lock").touch()
    (feed / "notes.txt").write_text("operator's file")
    (feed / "._metadata.json.tmp").write_text("{")
    removed = cleanup.remove_orphans(feed, doc, kind="stream")
    assert len(removed) == 4
    assert _files(feed) == [
        ".lock", "_metadata.json", "notes.txt",
        "year=2025/month=01/day=15/data_20250115_120000.parquet",
    ]
    assert cleanup.remove_orphans(feed, doc, kind="stream") == []


def test_orphan_cleanup_table(tmp_path: Path) -> None:
    """Unlisted version dirs and the feed's staging dir are removed; listed versions stay."""
    store = md.MetadataStore()
    _table_run(tmp_path, store, retention=5)
    SnapshotSink(tmp_path, "t", FLAT, version=2, run_start=RUN).publish()  # never committed
    SnapshotSink(tmp_path, "t", FLAT, version=3, run_start=RUN).write(_flat([1]))  # in staging
    feed = tmp_path / "tables" / "t"
    staging = layout.staging_dir(tmp_path, "t")
    doc = store.load(feed)
    listed = cleanup.remove_orphans(feed, doc, kind="table", staging_dir=staging, dry_run=True)
    assert listed == [feed / "version=v2", staging]
    assert (feed / "version=v2").exists()
    cleanup.remove_orphans(feed, doc, kind="table", staging_dir=staging)
    assert sorted(os.listdir(feed)) == [".lock", "_metadata.json", "version=v1"] or sorted(
        os.listdir(feed)
    ) == ["_metadata.json", "version=v1"]
    assert not staging.exists()


def test_stream_retention_deletes_after_commit(tmp_path: Path) -> None:
    """Expired days leave the metadata in one commit, then their folders are deleted."""
    feed = tmp_path / "streams" / "f"
    store = md.MetadataStore()
    store.load(feed)
    sink = AppendSink(feed, FLAT, run_start=RUN, max_open_partitions=8)
    sink.write(_flat([JAN15 - k * DAY_MS for k in range(40)]))  # Dec 7 .. Jan 15
    doc = md.with_stream_files(md.StreamMetadata(feed="f", source="F"), sink.finish(), watermark_ms=1)
    now = dt.datetime(2025, 1, 15, 18, tzinfo=dt.UTC)
    kept, dropped = md.without_partitions_before(doc, layout.retention_cutoff(now, 7))
    store.commit(feed, kept)
    cleanup.delete_partitions(feed, dropped)
    assert len(kept.partitions) == 8 and len(dropped) == 32
    assert sorted(os.listdir(feed)) == ["_metadata.json", "year=2025"]
    assert sorted(os.listdir(feed / "year=2025" / "month=01")) == [f"day={d:02d}" for d in range(8, 16)]


def test_readers_see_exactly_the_published_rows(tmp_path: Path) -> None:
    """DuckDB and Polars hive-partitioned globs read published files and skip hidden temps."""
    root = tmp_path
    feed = root / "streams" / "f"
    sink = AppendSink(feed, FLAT, run_start=RUN, max_open_partitions=8)
    sink.write(_flat([JAN15 + (i % 3) * DAY_MS + i for i in range(300)]))
    sink.finish()
    wider = _schema([("ID", "BIGINT"), ("NAME", "STRING"), ("ROWTIME", "BIGINT"), ("X", "DOUBLE")])
    extra = AppendSink(feed, wider, run_start=RUN + dt.timedelta(hours=1))
    extra.write(pa.RecordBatch.from_arrays(
        [pa.array([1000], pa.int64()), pa.array(["z"]), pa.array([JAN15], pa.int64()),
         pa.array([1.5])], schema=wider))
    extra.finish()
    pending = AppendSink(feed, FLAT, run_start=RUN + dt.timedelta(hours=2))
    pending.write(_flat([JAN15 + 7], start=5000))  # a temp file a reader must not see
    assert any(p.name.endswith(".tmp") for p in feed.rglob("*"))
    glob = f"{feed}/**/*.parquet"
    rows = duckdb.sql(
        f"SELECT count(*), count(X), min(CAST(day AS INTEGER)), max(CAST(day AS INTEGER)) "
        f"FROM read_parquet('{glob}', hive_partitioning=true, union_by_name=true)"
    ).fetchall()
    assert rows == [(301, 1, 15, 17)]
    # Polars takes the schema from the first file; readers pass the metadata's union schema.
    union = {"ID": pl.Int64, "NAME": pl.String, "ROWTIME": pl.Int64, "X": pl.Float64}
    frame = pl.scan_parquet(
        glob, hive_partitioning=True, schema=union, missing_columns="insert"
    ).collect()
    assert frame.height == 301 and 5000 not in frame["ID"].to_list()
    assert sorted(set(frame["day"].cast(pl.Int32).to_list())) == [15, 16, 17]
    pending.abort()


def test_failpoints_cover_every_write_step() -> None:
    """Every failpoint named in the code is declared, and there are at least 45 here."""
    package = Path(md.__file__).parents[1]  # lakeexportd/, every layer's folder
    text = "".join(p.read_text() for p in package.rglob("*.py"))
    for name in FAILPOINTS:
        prefix, step = name.split(".", 1)
        assert f'"{name}"' in text or f'"{{self._prefix}}.{step}"' in text or (
            f'f"{{failpoint_prefix}}.{step}"' in text
        ), name
    assert len(FAILPOINTS) >= 45


@pytest.mark.parametrize("point", ["append.after_rename", "append.after_all_renames",
                                   "append.after_row_group", "append.after_lru_close"])
def test_crash_mid_append_leaves_only_orphans(tmp_path: Path, point: str) -> None:
    """SIGKILL at a write step leaves nothing listed; cleanup restores the committed state."""
    feed = tmp_path / "streams" / "f"
    code = (
        "import sys, datetime as dt, pathlib\n"
        "from tests.lake.test_sinks import _flat, FLAT, JAN15, DAY_MS, RUN\n"
        "from lakeexportd.lake.sinks import AppendSink\n"
        "s = AppendSink(pathlib.Path(sys.argv[1]), FLAT, run_start=RUN, max_open_partitions=1,"
        " row_group_rows=5)\n"
        "s.write(_flat([JAN15 + i for i in range(10)] + [JAN15 + DAY_MS]))\n"
        "s.finish()\n"
    )
    env = {**os.environ, "LAKEEXPORTD_FAILPOINT": point}
    cwd = Path(__file__).parents[2]
    proc = subprocess.run([sys.executable, "-c", code, str(feed)], env=env, cwd=cwd, check=False)
    assert proc.returncode == -9
    assert feed.exists()
    # A run commits an empty document before its sink writes (export_run): the committed state.
    committed = StreamMetadata(feed="f", source="S")
    cleanup.remove_orphans(feed, committed, kind="stream")
    assert _files(feed) == []


def test_temp_file_that_cannot_be_started_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the Parquet writer cannot start its file (ENOSPC), the empty temp does not stay."""

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "ParquetWriter", full_disk)
    target = tmp_path / ".data_x.parquet.tmp"
    with pytest.raises(LakeStateError, match="No space left"):
        ParquetFile(target, pa.schema([("a", pa.int64())]), file_mode=0o640, failpoint_prefix="append")
    assert not target.exists()
