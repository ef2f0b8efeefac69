"""``committed_files``: exactly what ``_metadata.json`` lists, as a reader opens it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path, PurePosixPath

import pytest

from lakeexportd.audit.files import committed_files
from lakeexportd.errors import FeedError
from lakeexportd.lake.metadata_model import (
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
    with pytest.raises(FeedError, match="keeps no version 1 \\(kept: 2, 3\\)"):
        committed_files(storage, feed_dir, TABLE, version=1)
    with pytest.raises(FeedError, match="no version created at or before"):
        committed_files(storage, feed_dir, TABLE, as_of=noon - dt.timedelta(days=2))
    with pytest.raises(FeedError, match="is a stream"):
        committed_files(storage, feed_dir, STREAM, version=1)
