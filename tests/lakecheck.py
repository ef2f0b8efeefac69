"""Helpers shared by tests that check a lake against the sandbox's ground truth."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakeexportd.audit.verify import listed_files, verify_feed
from lakeexportd.config.model import Feed, Schedule
from lakeexportd.export.exporter import DataLakeExporter
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.lake import layout
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.storage import LOCAL, Storage

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)  # after every preloaded row


def feed(name: str, source: str, kind: str = "stream", **options: Any) -> Feed:
    return Feed(name=name, source=source, kind=kind, schedule=Schedule(every=60), **options)  # type: ignore[arg-type]


_open_clients: list[KsqlDBClient] = []


def exporter(url: str, root: Path, **client_options: Any) -> DataLakeExporter:
    """An exporter on a fresh client; ``close_clients`` (autouse fixture) closes it."""
    options: dict[str, Any] = {"backoff_base": 0.01, "max_retries": 2}
    options.update(client_options)
    client = KsqlDBClient(CurlTransport(url), **options)
    _open_clients.append(client)
    return DataLakeExporter(client, root, lock_wait=2)


def close_clients() -> None:
    while _open_clients:
        _open_clients.pop().close()


def read_listed(root: Path, kind: str, name: str, storage: Storage = LOCAL) -> pa.Table:
    """Every row of the files ``_metadata.json`` lists (tables: the current version only),
    read through ``storage`` (the local disk unless the lake is on an object store)."""
    feed_dir = layout.feed_dir(root, kind, name)  # type: ignore[arg-type]
    doc = MetadataStore(storage).load(feed_dir)
    assert doc is not None, f"{feed_dir} has no _metadata.json"
    entries = listed_files(doc)
    if kind == "table":
        current = f"version=v{doc.current_version}"  # type: ignore[union-attr]
        entries = [(d, e) for d, e in entries if d == current]
    tables = []
    for directory, entry in entries:
        with storage.open_read(feed_dir / directory / entry.name) as source:
            tables.append(pq.read_table(source))
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def assert_consistent(root: Path, kind: str, name: str, storage: Storage = LOCAL) -> None:
    """Metadata and files agree: nothing listed is missing or different, nothing unlisted."""
    problems = verify_feed(root, kind, name, storage=storage)  # type: ignore[arg-type]
    assert not problems, "\n".join(map(str, problems))


def wire_truth(truth: pa.Table) -> pa.Table:
    """What ksqlDB's REST API can carry: it writes top-level TIME values without their
    milliseconds (``LocalTime.ofSecondOfDay(ms / 1000)``, wire reference section 4)."""
    for i, field in enumerate(truth.schema):
        if pa.types.is_time(field.type):
            per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[field.type.unit]
            ticks = truth.column(i).cast(pa.int64())
            whole = pc.multiply(pc.divide(ticks, per_second), per_second)
            truth = truth.set_column(i, field, whole.cast(field.type))
    return truth


def assert_exactly_once(lake: pa.Table, truth: pa.Table, key: str = "TRANSACTION_ID") -> None:
    """The lake holds every source row exactly once, with equal values and types."""
    ids = lake.column(key).to_pylist()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicated rows"
    assert set(ids) == set(truth.column(key).to_pylist()), "rows missing or extra"
    lake = lake.select(truth.column_names).sort_by(key)
    truth = wire_truth(truth).sort_by(key)
    for name in truth.column_names:
        assert lake.schema.field(name).type == truth.schema.field(name).type, name
        assert lake.column(name).to_pylist() == truth.column(name).to_pylist(), name


class Recorder:
    """Observer with real state: what the client saw, per endpoint."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.retries: list[str] = []

    def request(self, endpoint: str, code: str) -> None:
        self.requests.append((endpoint, code))

    def retry(self, endpoint: str) -> None:
        self.retries.append(endpoint)


class StreamTruth:
    """What the readers' tests ask of ``truth``, a stream's rows as the wire carries them."""

    truth: pa.Table

    def days(self) -> list[tuple[int, int, int]]:
        """The UTC days of the rows' ROWTIME, as the partitions name them."""
        stamps = self.truth.column("ROWTIME").to_pylist()
        dates = {dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date() for ms in stamps}
        return sorted((d.year, d.month, d.day) for d in dates)

    def by_id(self, column: str) -> list[Any]:
        """``column``'s values in TRANSACTION_ID order."""
        return self.truth.sort_by("TRANSACTION_ID").column(column).to_pylist()
