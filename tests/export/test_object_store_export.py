"""The seam carries a whole export: DataLakeExporter writes a lake on real object stores.

The lake lives on moto's S3 server or on Azurite (real servers started by the tests); the
exporter is the same code that writes local lakes, given the storage ``open_lake`` chose for
the URL. Only the seam differs: no rename, no flock, conditional PUTs and a lease. The truth
is the sandbox's own (``Sandbox.arrow``); the files are read back through the object store.
Not yet the daemon or the CLI: issue 4/7 wires ``lake.root`` URLs into the configuration.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from lakecheck import NOW, assert_exactly_once, feed, read_listed
from objectstores import Bucket

from lakeexportd.audit.verify import verify_feed
from lakeexportd.errors import LakeExportError
from lakeexportd.export.exporter import DataLakeExporter
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.lake import layout
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import StreamMetadata, listed_files
from lakeexportd.lake.storage import Lake, open_lake
from lakeexportd.sandbox import Sandbox


@pytest.fixture(scope="module")
def static() -> Iterator[Sandbox]:
    with Sandbox.start(seed=3, preload=3000, preload_days=5) as sb:
        yield sb


@pytest.fixture(params=["s3_bucket", "azure_container"])
def lake(request: pytest.FixtureRequest) -> Lake:
    bucket: Bucket = request.getfixturevalue(request.param)
    options = {k: str(v) for k, v in {**bucket.config, "allow_http": "true"}.items()}
    return open_lake(f"{bucket.url}/lake", options)


@pytest.fixture
def exporter(static: Sandbox, lake: Lake) -> Iterator[DataLakeExporter]:
    client = KsqlDBClient(CurlTransport(static.url), backoff_base=0.01, max_retries=2)
    try:
        yield DataLakeExporter(client, lake.root, lock_wait=2,  # type: ignore[arg-type]
                               storage=lake.storage)
    finally:
        client.close()


def test_a_stream_lands_exactly_once_on_the_object_store(
    exporter: DataLakeExporter, static: Sandbox, lake: Lake,
) -> None:
    f = feed("tx", "TRANSACTION_FLATTENED")
    first = exporter.export(f, NOW)
    again = exporter.export(f, NOW + dt.timedelta(minutes=1))  # nothing new: nothing written
    truth = static.arrow("TRANSACTION_FLATTENED")
    assert first.rows == truth.num_rows == 3000 and again.rows == 0
    rows = read_listed(lake.root, "stream", "tx", lake.storage)  # type: ignore[arg-type]
    assert_exactly_once(rows, truth)
    assert rows.schema.equals(truth.schema)
    problems = verify_feed(lake.root, "stream", "tx", storage=lake.storage)  # type: ignore[arg-type]
    assert problems == []
    doc = MetadataStore(lake.storage).load(layout.feed_dir(lake.root, "stream", "tx"))  # type: ignore[arg-type]
    assert isinstance(doc, StreamMetadata) and doc.watermark_ms == again.watermark_ms
    # Nothing but what the document lists (and the lease) is left under the feed.
    feed_dir = layout.feed_dir(lake.root, "stream", "tx")  # type: ignore[arg-type]
    names = {e.path.relative_to(feed_dir).as_posix() for e in lake.storage.walk_files(feed_dir)}
    listed = {f"{d}/{e.name}" for d, e in listed_files(doc)}
    assert names == listed | {layout.METADATA_NAME, layout.LEASE_NAME}
    assert len(listed) >= 5  # one file per event day
    # No rename on object stores: each file was uploaded once, under its final name.
    assert all(n.endswith("_part0001.parquet") for n in listed), listed


def test_a_table_snapshot_is_the_table_on_the_object_store(
    exporter: DataLakeExporter, static: Sandbox, lake: Lake,
) -> None:
    f = feed("users", "USER_SUMMARY", kind="table")
    first = exporter.export(f, NOW)
    second = exporter.export(f, NOW + dt.timedelta(minutes=1))
    truth = static.arrow("USER_SUMMARY").drop_columns(["ROWTIME"])
    rows = read_listed(lake.root, "table", "users", lake.storage)  # type: ignore[arg-type]
    assert first.version == 1 and second.version == 2
    assert rows.schema.equals(truth.schema, check_metadata=False)
    assert rows.sort_by("USER_ID").to_pylist() == truth.sort_by("USER_ID").to_pylist()
    assert verify_feed(lake.root, "table", "users", storage=lake.storage) == []  # type: ignore[arg-type]
    # Written in place (no staging to rename from on an object store).
    staging = layout.staging_dir(lake.root, "users")  # type: ignore[arg-type]
    assert list(lake.storage.walk_files(staging)) == []


@pytest.mark.parametrize("fault", [{"kind": "cut_after_rows", "rows": 250},
                                   {"kind": "error_after_rows", "rows": 250}])
def test_a_broken_answer_leaves_no_object_and_the_next_run_is_exact(
    lake: Lake, fault: dict[str, object],
) -> None:
    """Uploads of a failed run are aborted or deleted: no data object appears, no row is lost."""
    with Sandbox.start(seed=5, preload=600, preload_days=3) as sb:
        client = KsqlDBClient(CurlTransport(sb.url), backoff_base=0.01, max_retries=2)
        try:
            ex = DataLakeExporter(client, lake.root, lock_wait=2,  # type: ignore[arg-type]
                                  storage=lake.storage)
            f = feed("tx", "TRANSACTION_FLATTENED")
            sb.inject(path="/query-stream", **fault)
            with pytest.raises(LakeExportError):
                ex.export(f, NOW)
            feed_dir = layout.feed_dir(lake.root, "stream", "tx")  # type: ignore[arg-type]
            left = {e.name for e in lake.storage.walk_files(feed_dir)}
            assert left == {layout.METADATA_NAME, layout.LEASE_NAME}
            ex.export(f, NOW)
            rows = read_listed(lake.root, "stream", "tx", lake.storage)  # type: ignore[arg-type]
            assert_exactly_once(rows, sb.arrow("TRANSACTION_FLATTENED"))
            assert verify_feed(lake.root, "stream", "tx", storage=lake.storage) == []  # type: ignore[arg-type]
        finally:
            client.close()
