"""The catalog of a lake on S3 (moto's server): the same tables, Iceberg's metadata written to
the bucket under ``<lake>/_catalog``, and pyiceberg reading the files straight from the store.

The truth is the sandbox's rows and the ``_metadata.json`` read from the bucket as JSON; the
catalog is read by a pyiceberg ``SqlCatalog`` of the test's own, with the server's S3 options.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import obstore
import pyarrow as pa
import pytest
from lakecheck import assert_exactly_once, feed
from objectlake import document, listed
from objectstores import Bucket
from pyiceberg.catalog.sql import SqlCatalog

from lakeexportd.catalog.iceberg import LakeCatalog
from lakeexportd.config.model import CatalogSettings
from lakeexportd.export.exporter import DataLakeExporter
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.lake.configured import ConfiguredLake
from lakeexportd.lake.storage import open_lake
from lakeexportd.sandbox import Sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=4, preload=700, preload_days=4) as sb:
        yield sb


def test_feeds_on_s3_are_iceberg_tables_read_from_the_bucket(
        sandbox: Sandbox, s3_bucket: Bucket, tmp_path: Path) -> None:
    options = {k: str(v) for k, v in {**s3_bucket.config, "allow_http": "true"}.items()}
    lake = open_lake(f"{s3_bucket.url}/lake", options)
    db = tmp_path / "catalog.db"
    catalog = LakeCatalog(CatalogSettings(uri=f"sqlite:///{db}"),
                          ConfiguredLake(lake.storage, lake.root, s3_bucket.url))  # type: ignore[arg-type]
    client = KsqlDBClient(CurlTransport(sandbox.url), backoff_base=0.01, max_retries=2)
    try:
        exporter = DataLakeExporter(client, lake.root, lock_wait=2,  # type: ignore[arg-type]
                                    storage=lake.storage, catalog=catalog)
        tx = feed("tx", "TRANSACTION_STREAM", retention_days=2, compaction=None)
        users = feed("users", "USER_SUMMARY", kind="table", retention_versions=1)
        now = dt.datetime.now(dt.UTC)
        for minute in range(2):
            if minute:
                sandbox.generate(40)  # new rows for the second run, new days for the table
            for f in (tx, users):
                result = exporter.export(f, now + dt.timedelta(minutes=minute))
                assert result.catalog_behind is None
    finally:
        client.close()
    endpoint = s3_bucket.config["endpoint"]
    reader = SqlCatalog("lakeexportd", uri=f"sqlite:///{db}", **{
        "s3.endpoint": endpoint, "s3.access-key-id": s3_bucket.config["access_key_id"],
        "s3.secret-access-key": s3_bucket.config["secret_access_key"],
        "s3.region": s3_bucket.config["region"]})
    for kind, name in (("stream", "tx"), ("table", "users")):
        table = reader.load_table(("lake", name))
        assert table.metadata_location.startswith(f"{s3_bucket.url}/lake/_catalog/lake/{name}/")
        files = [task.file.file_path for task in table.scan().plan_files()]
        assert len(files) == len(set(files))
        prefix = f"{s3_bucket.url}/lake/{kind}s/{name}/"
        assert {f.removeprefix(prefix) for f in files} == listed(
            document(s3_bucket, "lake", kind, name))
        for snapshot in table.metadata.snapshots:  # every snapshot still readable
            for task in table.scan(snapshot_id=snapshot.snapshot_id).plan_files():
                key = task.file.file_path.removeprefix(f"{s3_bucket.url}/")
                obstore.head(s3_bucket.store, key)
    rows = reader.load_table(("lake", "tx")).scan().to_arrow()
    truth = sandbox.arrow("TRANSACTION_STREAM")
    cutoff = int((now + dt.timedelta(minutes=1)).timestamp() * 1000) // 86_400_000 - 2
    truth = truth.filter(pa.compute.greater_equal(
        pa.compute.divide(truth.column("ROWTIME"), 86_400_000), cutoff))
    assert_exactly_once(rows.select(truth.column_names).cast(truth.schema), truth)
    table_rows = reader.load_table(("lake", "users")).scan().to_arrow()
    assert sorted(table_rows.column("USER_ID").to_pylist()) == sorted(
        r["USER_ID"] for r in sandbox.table("USER_SUMMARY"))
