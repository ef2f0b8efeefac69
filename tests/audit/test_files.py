"""``committed_files``: exactly what ``_metadata.json`` lists, as a reader opens it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path, PurePosixPath

import pytest

from lakeexportd.audit.files import committed_files
from lakeexportd.errors import FeedError
from lakeexportd.lake.metadata_model import (
    ExportRecord,
    FileEntry,
    Partition,
    StreamMetadata,
    TableMetadata,
    Version,
)
from lakeexportd.lake.storage import LocalStorage, open_lake

STREAM = StreamMetadata(feed="tx", source="TX", partitions=(
    Partition("year=2025/month=01/day=14", (FileEntry("data_20250115_000000.parquet", 3, 30),)),
    Partition("year=2025/month=01/day=15", (
        FileEntry("data_20250115_000000_part0001.parquet", 5, 50),
        FileEntry("data_20250115_000000_part0002.parquet", 1, 10),
    )),
))
TABLE = TableMetadata(feed="users", source="USERS", current_version=3, last_version=3, versions=(
    Version(2, "2025-01-14T00:00:00Z", (FileEntry("snapshot_20250114_000000.parquet", 7, 70),)),
    Version(3, "2025-01-15T00:00:00Z", (FileEntry("snapshot_20250115_000000.parquet", 8, 80),)),
))


def test_a_streams_files_are_every_listed_file_as_a_local_path() -> None:
    feed_dir = Path("/lake/streams/tx")
    files = committed_files(LocalStorage(), feed_dir, STREAM)
    assert [f.url for f in files] == [
        "/lake/streams/tx/year=2025/month=01/day=14/data_20250115_000000.parquet",
        "/lake/streams/tx/year=2025/month=01/day=15/data_20250115_000000_part0001.parquet",
        "/lake/streams/tx/year=2025/month=01/day=15/data_20250115_000000_part0002.parquet",
    ]
    assert [(f.records, f.size_bytes) for f in files] == [(3, 30), (5, 50), (1, 10)]


def test_on_an_object_store_the_urls_are_the_stores() -> None:
    lake = open_lake("memory:///lake")
    feed_dir = lake.root / "streams" / "tx"
    urls = [f.url for f in committed_files(lake.storage, feed_dir, STREAM)]
    assert urls[0] == "memory:///lake/streams/tx/year=2025/month=01/day=14/" \
                      "data_20250115_000000.parquet"


def test_a_table_gives_one_version_current_chosen_or_as_of() -> None:
    feed_dir = PurePosixPath("/lake/tables/users")
    storage = LocalStorage()
    current = committed_files(storage, feed_dir, TABLE)
    assert [(f.partition, f.records) for f in current] == [("version=v3", 8)]
    assert committed_files(storage, feed_dir, TABLE, version=2)[0].partition == "version=v2"
    noon = dt.datetime(2025, 1, 14, 12, tzinfo=dt.UTC)
    assert committed_files(storage, feed_dir, TABLE, as_of=noon)[0].partition == "version=v2"
    with pytest.raises(FeedError, match="keeps no version 1 \\(kept: 2, 3; older versions "
                       "were removed by retention_versions\\)"):
        committed_files(storage, feed_dir, TABLE, version=1)
    with pytest.raises(FeedError, match="keeps no version 4 \\(kept: 2, 3; the newest is 3\\)"):
        committed_files(storage, feed_dir, TABLE, version=4)
    with pytest.raises(FeedError, match="no version committed at or before"):
        committed_files(storage, feed_dir, TABLE, as_of=noon - dt.timedelta(days=2))
    with pytest.raises(FeedError, match="is a Parquet stream: it has no numbered versions; "
                       "use --as-of TIME"):
        committed_files(storage, feed_dir, STREAM, version=1)


def _run(run_id: str, started: str, finished: str, records: int, **more: object) -> ExportRecord:
    return ExportRecord(run_id, started, finished, records, "success", **more)  # type: ignore[arg-type]


TIMED = StreamMetadata(
    feed="tx", source="TX",
    partitions=(Partition("year=2025/month=01/day=15", (
        # written before `added` existed: the run start in the name stands in for it
        FileEntry("data_20250115_100000.parquet", 3, 30),
        FileEntry("data_20250115_110000.parquet", 4, 40, added="2025-01-15T11:00:09Z"),
        FileEntry("data_20250115_120000.parquet", 5, 50, added="2025-01-15T12:00:07Z"),
    )),),
    exports=(_run("r1", "2025-01-15T10:00:00Z", "2025-01-15T10:00:05Z", 3),
             _run("r2", "2025-01-15T11:00:00Z", "2025-01-15T11:00:09Z", 4),
             _run("r3", "2025-01-15T12:00:00Z", "2025-01-15T12:00:07Z", 5)),
)


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def test_a_streams_as_of_gives_the_files_committed_by_then() -> None:
    """--as-of on a stream: files whose `added` (or, absent, the name's run start) is at or
    before TIME; exactly at a commit time includes it; the future gives every file."""
    storage, feed_dir = LocalStorage(), Path("/lake/streams/tx")

    def names(at: str) -> list[str]:
        return [f.url.rsplit("/", 1)[1] for f in committed_files(storage, feed_dir, TIMED,
                                                                 as_of=_at(at))]

    assert names("2025-01-15T10:30:00") == ["data_20250115_100000.parquet"]
    assert names("2025-01-15T11:00:08") == ["data_20250115_100000.parquet"]
    assert names("2025-01-15T11:00:09") == ["data_20250115_100000.parquet",
                                           "data_20250115_110000.parquet"]
    assert len(names("2099-01-01T00:00:00")) == 3
    with pytest.raises(FeedError, match="'tx' has no commit at or before 2025-01-15T09:59:59Z: "
                       "its first known commit is at 2025-01-15T10:00:00Z"):
        names("2025-01-15T09:59:59")


def test_a_tables_as_of_goes_by_commit_time_not_run_start() -> None:
    """A version is readable from its run's commit (`finished`), not from its run start: in
    between, the lake still showed the previous version."""
    table = TableMetadata(
        feed="users", source="USERS", current_version=3, last_version=3, versions=TABLE.versions,
        exports=(_run("r3", "2025-01-15T00:00:00Z", "2025-01-15T00:05:00Z", 8, version=3),))
    storage, feed_dir = LocalStorage(), PurePosixPath("/lake/tables/users")
    during = committed_files(storage, feed_dir, table, as_of=_at("2025-01-15T00:04:59"))
    assert during[0].partition == "version=v2"
    after = committed_files(storage, feed_dir, table, as_of=_at("2025-01-15T00:05:00"))
    assert after[0].partition == "version=v3"
