"""Every Parquet feed as an Apache Iceberg table, kept level with the lake (DESIGN 13).

``LakeCatalog.sync(feed)`` makes the feed's table in the catalog list exactly the files the
lake's ``_metadata.json`` lists, and nothing else (``connection`` opens the catalog, ``entries``
makes the schema and the files' entries, ``snapshots`` says which snapshots go; only this
package imports pyiceberg):

- **The lake is the truth.** A sync reads the catalog's current snapshot *first*, then the
  lake's document, diffs the two file sets and commits the difference as one Iceberg snapshot
  (adds: ``merge_append``, which merges small manifests; any removal: ``overwrite``). The
  commit is a compare-and-swap on the snapshot it read (the SQL catalog's ``UPDATE ... WHERE
  metadata_location = <read>``), so a commit that raced another one fails and the sync
  starts again from a fresh read. pyiceberg's own retry re-applies the same append on top
  of the winner's: it would list a file twice, so every table carries
  ``commit.retry.num-retries=0`` and this module retries by diffing again.
- **A diff is idempotent.** A kill between the lake's commit and the catalog's, an outage, or
  two daemons syncing the same feed all end the same way: the next sync adds what is missing
  and removes what the lake no longer lists. No state is kept anywhere else.
- **Files are registered, never rewritten.** A data file keeps its path; its Iceberg entry
  gets the row count and column bounds from its own Parquet footer. The files carry no Iceberg
  field ids, so the table's name mapping (``schema.name-mapping.default``) maps columns by name.
- **Partitions.** A stream's files lie in ``year=/month=/day=`` folders by event time in the
  feed's time zone; those three values are not columns of the files. They are declared as
  ``int`` columns with identity partitioning, filled from each file's folder: Iceberg readers
  project them from the partition data (the spec's rule for identity columns absent from a
  file), as Hive-style tables migrated to Iceberg do. Tables (snapshots) are unpartitioned.
- **Versions.** A table feed's versions become snapshots (``lakeexportd.version`` in their
  summary), one per version, in order, also when catching up after an outage. Snapshots that
  name files the lake has deleted (or is about to) are expired, so time travel never reaches a
  missing file: a snapshot is kept while every later removal only removed files the lake still
  holds under that path (listed, or on an object store retired and in their grace; a local
  lake hides retired inputs under another name at once).

Iceberg's own metadata (table JSON, manifests) goes under the catalog's warehouse, by default
``<lake>/_catalog/<namespace>/<feed>/metadata``, never into a feed's folder.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq
import structlog
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.manifest import (
    DataFile,
)
from pyiceberg.table import Table
from pyiceberg.table.name_mapping import create_mapping_from_schema

from lakeexportd.catalog import connection, entries, snapshots
from lakeexportd.catalog.policy import left_out
from lakeexportd.config.model import CatalogSettings, Feed
from lakeexportd.errors import CatalogError
from lakeexportd.failpoints import failpoint
from lakeexportd.lake import layout
from lakeexportd.lake.configured import ConfiguredLake
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import (
    FeedMetadata,
    FileEntry,
    StreamMetadata,
    TableMetadata,
    kept_paths,
    listed_paths,
)

log = structlog.get_logger(__name__)

COMMIT_ATTEMPTS: Final = 4  # fresh diffs after losing a race to another writer's commit
TUNING: Final = {
    # A stream commits once a run, and a sync reads every manifest of the current snapshot:
    # merge them once there are 10 (pyiceberg's default is off; Iceberg's count is 100). With
    # 100, a sync took 13 ms more per run until the merge (benchmarks/catalog_sync.py).
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "10",
    # Keep 20 old table metadata files, not one per run forever.
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
}


@dataclass(frozen=True)
class SyncResult:
    """What one sync of one feed did."""

    feed: str
    table: str  # "lake.transactions"
    added: int = 0
    removed: int = 0
    snapshots: int = 0  # snapshots committed (a table catching up commits one per version)
    expired: int = 0
    created: bool = False
    waiting: str | None = None  # why nothing is registered yet (no files, no document)


@dataclass(frozen=True)
class CatalogState:
    """How a feed's table compares with the lake, read-only (``catalog show``, ``verify``)."""

    feed: str
    table: str
    exists: bool
    snapshot_id: int | None = None
    snapshot_time: dt.datetime | None = None
    files: int = 0  # the catalog's current snapshot
    records: int = 0
    missing: tuple[str, ...] = ()  # lake files the catalog does not list
    extra: tuple[str, ...] = ()  # catalog files the lake does not list
    version: int | None = None  # tables: the version the current snapshot is
    lake_version: int | None = None
    properties: Mapping[str, str] | None = None
    snapshots: int = 0
    location: str | None = None
    metadata_location: str | None = None

    @property
    def level(self) -> bool:
        return not self.missing and not self.extra and self.version == self.lake_version


class LakeCatalog:
    """The configured Iceberg catalog of one lake (opened on first use, one per daemon)."""

    def __init__(self, settings: CatalogSettings, lake: ConfiguredLake) -> None:
        self.settings = settings
        self.lake = lake
        self.store = MetadataStore(lake.storage)
        self._catalog: Catalog | None = None
        self._open_guard = threading.Lock()
        self._in_flight: dict[str, concurrent.futures.Future[SyncResult]] = {}
        self._flight_guard = threading.Lock()
        self._level: dict[str, bool] = {}  # feed -> its last sync in this process succeeded

    # -- opening ---------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return self.settings.where

    def catalog(self) -> Catalog:
        with self._open_guard:
            if self._catalog is None:
                with self._errors("open"):
                    self._catalog = connection.open_catalog(self.settings, self.lake)
            return self._catalog

    def close(self) -> None:
        with self._open_guard:
            catalog, self._catalog = self._catalog, None
        engine = getattr(catalog, "engine", None)
        if engine is not None:
            engine.dispose()

    @property
    def warehouse(self) -> str:
        return connection.warehouse(self.settings, self.lake)

    def _uri_of(self, path: PurePath) -> str:
        return connection.uri_of(self.lake, path)

    def identifier(self, feed: Feed) -> tuple[str, str]:
        return self.settings.namespace_of(feed.security), feed.name

    def name(self, feed: Feed) -> str:
        return ".".join(self.identifier(feed))

    @contextlib.contextmanager
    def _errors(self, action: str, feed: str | None = None) -> Iterator[None]:
        """Whatever pyiceberg, SQLAlchemy or the store raise becomes a ``CatalogError`` that
        says which catalog, which feed, and that the lake is unharmed."""
        try:
            yield
        except (CatalogError, CommitFailedException):
            raise  # ours already, or a lost race ``sync`` answers with a fresh diff
        except Exception as exc:  # noqa: BLE001 - a foreign library's whole error surface
            what = f"feed {feed!r}: " if feed else ""
            detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise CatalogError(
                f"{what}{self.where}: {action} failed ({type(exc).__name__}: {detail}). The "
                "lake is unaffected; the next run or `lakeexportd catalog sync` catches up"
            ) from exc

    # -- reading ---------------------------------------------------------------------------

    def load(self, feed: Feed) -> Table | None:
        with self._errors("loading the table", feed.name):
            try:
                return self.catalog().load_table(self.identifier(feed))
            except NoSuchTableError:
                return None

    def tables(self) -> list[tuple[str, str]]:
        """Every table in lakeexportd's namespaces (the one, or one per security level)."""
        namespaces = ([self.settings.namespace] if not self.settings.security_namespaces else
                      [self.settings.namespace_of(level)
                       for level in ("raw", "anonymized", "aggregated")])
        found: list[tuple[str, str]] = []
        catalog = self.catalog()
        with self._errors("listing tables"):
            existing = {ns[0] if len(ns) == 1 else ".".join(ns)
                        for ns in catalog.list_namespaces()}
            for namespace in namespaces:
                if namespace in existing:
                    found.extend((namespace, ident[-1])
                                 for ident in catalog.list_tables(namespace))
        return sorted(found)

    def state(self, feed: Feed) -> CatalogState:
        """The feed's table against the lake, without changing either."""
        name = self.name(feed)
        table = self.load(feed)
        doc = self.store.load(self._feed_dir(feed))
        wanted = self._wanted(feed, doc, _current_version(doc))
        lake_version = _current_version(doc)
        if table is None:
            return CatalogState(feed.name, name, exists=False, missing=tuple(sorted(wanted)),
                                lake_version=lake_version)
        with self._errors("reading the table", feed.name):
            listed = self._listed(table)
            snapshot = table.current_snapshot()
            records = sum(f.record_count for f in listed.values())
            version = snapshots.version_of(snapshot)
            return CatalogState(
                feed.name, name, exists=True,
                snapshot_id=snapshot.snapshot_id if snapshot else None,
                snapshot_time=snapshots.time_of(snapshot),
                files=len(listed), records=records,
                missing=tuple(sorted(set(wanted) - set(listed))),
                extra=tuple(sorted(set(listed) - set(wanted))),
                version=version if isinstance(doc, TableMetadata) else None,
                lake_version=lake_version,
                properties=dict(table.properties),
                snapshots=len(table.metadata.snapshots),
                location=table.location(),
                metadata_location=table.metadata_location,
            )

    # -- syncing ---------------------------------------------------------------------------

    def known_level(self, feed: str) -> bool:
        """The feed's last sync in this process brought its table level (unknown: False)."""
        return self._level.get(feed, False)

    def sync_within(self, feed: Feed, deadline: float) -> SyncResult:
        """``sync`` in a worker thread, waited for at most ``deadline`` seconds: a slow or
        frozen catalog delays no export. A sync that overruns goes on in the background (its
        commit is still a compare-and-swap, so it can only bring the table level or fail);
        until it ends, further syncs of the feed are refused as in flight."""
        with self._flight_guard:
            running = self._in_flight.get(feed.name)
            if running is not None and not running.done():
                raise CatalogError(
                    f"feed {feed.name!r}: {self.where}: the previous sync has not ended "
                    "(the catalog is slow or hangs); the feed stays behind until it does")
            future: concurrent.futures.Future[SyncResult] = concurrent.futures.Future()
            self._in_flight[feed.name] = future

        def work() -> None:
            try:
                future.set_result(self.sync(feed))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                future.set_exception(exc)

        self._level[feed.name] = False
        threading.Thread(target=work, name=f"catalog-sync-{feed.name}", daemon=True).start()
        try:
            result = future.result(timeout=deadline)
        except concurrent.futures.TimeoutError:
            raise CatalogError(
                f"feed {feed.name!r}: {self.where}: no answer within {deadline:g}s (catalog "
                "slow or down); the export stands, the feed is marked behind and the next "
                "run catches up") from None
        self._level[feed.name] = True  # level, or nothing to register yet
        return result

    def follow(self, feed: Feed, **context: str) -> str | None:
        """After a lake commit: bring the feed's table level within ``settings.timeout``.
        ``None`` when it is; else why not, logged as ``catalog.behind`` (never raised: the
        lake's commit stands whatever the catalog does). Callers delete what the commit
        dropped only on ``None``."""
        try:
            synced = self.sync_within(feed, self.settings.timeout)
        except CatalogError as exc:
            log.warning("catalog.behind", feed=feed.name, error=str(exc), **context,
                        hint="files the lake dropped are kept until the catalog is level; "
                        "`lakeexportd catalog sync` catches up by hand")
            return str(exc)
        if synced.waiting:
            log.debug("catalog.waiting", feed=feed.name, reason=synced.waiting)
        return None

    def sync(self, feed: Feed) -> SyncResult:
        """Make the feed's table list exactly the lake's files (see the module docstring)."""
        if (why := left_out(feed)) is not None:
            raise CatalogError(why)
        last: CommitFailedException | None = None
        for _ in range(COMMIT_ATTEMPTS):
            try:
                return self._sync_once(feed)
            except CommitFailedException as exc:  # another writer's commit won: diff again
                last = exc
        raise CatalogError(
            f"feed {feed.name!r}: {self.where}: {COMMIT_ATTEMPTS} commits in a row lost a race "
            f"to other writers ({last}); the next run tries again")

    def _sync_once(self, feed: Feed) -> SyncResult:
        name = self.name(feed)
        with self._errors("sync", feed.name):
            table = self._load_for_commit(feed)  # the catalog first, then the lake: see above
            doc = self.store.load(self._feed_dir(feed))
            if doc is None:
                return SyncResult(feed.name, name, waiting="the feed has no _metadata.json yet")
            created = False
            if table is None:
                schema = self.table_schema(feed, doc)
                if schema is None:
                    return SyncResult(feed.name, name, waiting="the feed has no data file yet")
                table = self._create(feed, doc, schema)
                created = True
            self._refuse_changed_columns(feed, doc, table)
            table = self._evolve(feed, doc, table)
            added = removed = committed = 0
            for version in self._pending_versions(doc, table):
                wanted = self._wanted(feed, doc, version)
                listed = self._listed(table)
                add = [path for path in wanted if path not in listed]
                drop = [listed[path] for path in listed if path not in wanted]
                if not add and not drop and (version is None
                                             or snapshots.version_of(table.current_snapshot())
                                             == version):
                    continue
                table = self._commit(feed, table, doc, version,
                                     [self._data_file(feed, table, wanted[p]) for p in add], drop)
                added += len(add)
                removed += len(drop)
                committed += 1
            expired = self._expire(feed, table, doc)
            return SyncResult(feed.name, name, added=added, removed=removed,
                              snapshots=committed, expired=expired, created=created)

    def _load_for_commit(self, feed: Feed) -> Table | None:
        """The table, with pyiceberg's commit retries off (see the module docstring): a table
        someone created or edited without it gets it back before any file is committed."""
        table = self.load(feed)
        if table is not None:
            self._refuse_foreign(feed, table)
        if table is not None and table.properties.get("commit.retry.num-retries") != "0":
            table = table.transaction().set_properties(
                {"commit.retry.num-retries": "0"}).commit_transaction()
        return table

    def _refuse_foreign(self, feed: Feed, table: Table) -> None:
        """A table at the feed's name that lakeexportd did not make for this feed of this lake
        (no ``lakeexportd.feed`` property, another feed's, or another location: someone
        else's table, or another lake's sharing the catalog) is never changed or dropped: a
        sync would remove its files from it and register the lake's into it."""
        owner = table.properties.get("lakeexportd.feed")
        location = table.location().rstrip("/")
        expected = self._uri_of(self._feed_dir(feed))
        if owner == feed.name and location == expected:
            return
        raise CatalogError(
            f"feed {feed.name!r}: {self.where}: table {'.'.join(table.name())} was not made by "
            f"lakeexportd for this feed (lakeexportd.feed={owner!r}, location {location}, "
            f"expected {expected}); it is left untouched and the feed stays uncatalogued. "
            "Rename or drop that table, or set `catalog.namespace` to another namespace")

    def _refuse_changed_columns(self, feed: Feed, doc: FeedMetadata, table: Table) -> None:
        """A column of the table that is not the feed's was renamed or added in the catalog by
        someone: files registered now would read it as nulls and the lake's column under a new
        id, so nothing is committed until an operator decides. (A feed's column the table
        lacks is added back by ``_evolve``: the lake's columns are the truth.)"""
        own = {column.name for column in doc.schema}
        if feed.kind == "stream":
            own.update(entries.PARTITION_COLUMNS)
        foreign = sorted(f.name for f in table.schema().fields if f.name not in own)
        if foreign:
            raise CatalogError(
                f"feed {feed.name!r}: {self.where}: table {self.name(feed)} has column(s) "
                f"{', '.join(foreign)} that the feed does not (renamed or added in the "
                "catalog); nothing was registered and the feed stays behind. Rename them back, "
                f"or drop the table (`lakeexportd catalog drop {feed.name}`, the lake's files "
                "are kept) and the next run registers the feed again")

    def _feed_dir(self, feed: Feed) -> Path:
        return layout.feed_dir(self.lake.root, feed.kind, feed.name)

    def _wanted(self, feed: Feed, doc: FeedMetadata | None,
                version: int | None) -> dict[str, tuple[str, FileEntry]]:
        """URI -> (folder, entry) of the files the lake lists (a table: ``version``'s)."""
        if doc is None:
            return {}
        feed_dir = self._feed_dir(feed)
        if isinstance(doc, StreamMetadata):
            pairs = [(p.path, f) for p in doc.partitions for f in p.files]
        else:
            pairs = [(v.path, f) for v in doc.versions if v.version == version for f in v.files]
        return {self._uri_of(feed_dir / folder / entry.name): (folder, entry)
                for folder, entry in pairs}

    def _listed(self, table: Table) -> dict[str, DataFile]:
        snapshot = table.current_snapshot()
        if snapshot is None:
            return {}
        return {entry.data_file.file_path: entry.data_file
                for manifest in snapshot.manifests(table.io)
                for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)}

    def _pending_versions(self, doc: FeedMetadata, table: Table) -> list[int | None]:
        """Streams: one diff. Tables: each kept version newer than the table's, in order (the
        current one always last), so every version a reader could see becomes a snapshot."""
        if isinstance(doc, StreamMetadata):
            return [None]
        current = doc.current_version
        if current is None:
            return []
        done = snapshots.version_of(table.current_snapshot())
        newer = [v.version for v in doc.versions
                 if (done is None or v.version > done) and v.version < current]
        return [*sorted(newer), current]

    def _newest_file(self, feed: Feed, doc: FeedMetadata) -> PurePath | None:
        wanted = self._wanted(feed, doc, _current_version(doc))
        if not wanted:
            return None
        # The last committed file has every column the feed has now (a compacted file takes
        # its newest input's commit time, and the feed's schema).
        folder, entry = max(wanted.values(), key=lambda item: (item[1].added or "",
                                                               item[1].name, item[0]))
        return self._feed_dir(feed) / folder / entry.name

    def table_schema(self, feed: Feed, doc: FeedMetadata) -> pa.Schema | None:
        """The Arrow schema the feed's table is made from: its newest file's, plus a stream's
        partition columns (``entries.catalog_schema``); None before its first file. A
        ``CatalogError`` says why Iceberg cannot hold it."""
        newest = self._newest_file(feed, doc)
        if newest is None:
            return None
        with self.lake.storage.open_read(newest) as source:
            return entries.catalog_schema(feed, pq.read_schema(source))

    def refusal(self, feed: Feed) -> str | None:
        """Why the catalog would refuse to register the feed (a column Iceberg cannot hold
        exactly, or one named like a partition column), from its newest file; else None."""
        doc = self.store.load(self._feed_dir(feed))
        if doc is None:
            return None
        try:
            self.table_schema(feed, doc)
        except CatalogError as exc:
            return str(exc)
        return None

    def _create(self, feed: Feed, doc: FeedMetadata, schema: pa.Schema) -> Table:
        """The feed's table: its files' schema (plus the partition columns of a stream), its
        partitioning, name mapping and properties, in one create commit."""
        catalog = self.catalog()
        namespace, _ = self.identifier(feed)
        self._ensure_namespace(namespace)
        self._move_from_other_level(feed)
        properties = {
            **self._described(feed),
            "format-version": "2",
            "commit.retry.num-retries": "0",
            "write.metadata.path": f"{self.warehouse}/{namespace}/{feed.name}/metadata",
            "write.parquet.compression-codec": "snappy",
            **TUNING,
        }
        try:
            tx = catalog.create_table_transaction(
                self.identifier(feed), schema=schema,
                location=self._uri_of(self._feed_dir(feed)), properties=properties)
            if isinstance(doc, StreamMetadata):
                with tx.update_spec() as spec:
                    for column in entries.PARTITION_COLUMNS:
                        spec.add_identity(column)
            tx.set_properties({"schema.name-mapping.default": create_mapping_from_schema(
                tx.table_metadata.schema()).model_dump_json()})
            table = tx.commit_transaction()
        except TableAlreadyExistsError:  # another daemon created it first: use theirs
            table = catalog.load_table(self.identifier(feed))
            self._refuse_foreign(feed, table)  # unless it is no lakeexportd table of the feed
        log.info("catalog.table_created", feed=feed.name, table=self.name(feed),
                 catalog=self.where, location=table.location())
        failpoint("catalog.after_create")
        return catalog.load_table(self.identifier(feed))

    def _ensure_namespace(self, namespace: str) -> None:
        """Create the namespace unless it exists. pyiceberg's SQL catalog checks, then inserts:
        another writer's insert in between (this daemon's other workers registering their first
        feeds, or another daemon) fails ours on the primary key, an ``IntegrityError`` it does
        not translate. The namespace exists then, which is all a table needs."""
        catalog = self.catalog()
        try:
            catalog.create_namespace_if_not_exists(namespace)
        except Exception:  # noqa: BLE001 - re-raised unless the namespace is there now
            if not catalog.namespace_exists(namespace):
                raise

    def _move_from_other_level(self, feed: Feed) -> None:
        """A feed whose security level changed under ``security_namespaces`` has its table in
        the old level's namespace: rename it, so readers keep its history."""
        if not self.settings.security_namespaces:
            return
        catalog = self.catalog()
        for level in ("raw", "anonymized", "aggregated"):
            old = (self.settings.namespace_of(level), feed.name)
            if old != self.identifier(feed) and catalog.table_exists(old):
                self._refuse_foreign(feed, catalog.load_table(old))  # only ever our own
                catalog.rename_table(old, self.identifier(feed))
                log.warning("catalog.table_moved", feed=feed.name, old=".".join(old),
                            table=self.name(feed), hint="the feed's security level changed")

    def _described(self, feed: Feed) -> dict[str, str]:
        """The feed's config as table properties: ``comment`` and ``owner`` as Trino, Spark
        and Hive name them; the rest under ``lakeexportd.``."""
        return {
            "comment": feed.description or "",
            "owner": feed.owner or "",
            "lakeexportd.tags": ",".join(feed.tags),
            "lakeexportd.security": feed.security,
            "lakeexportd.source": feed.source,
            "lakeexportd.kind": feed.kind,
            "lakeexportd.feed": feed.name,
        }

    def _evolve(self, feed: Feed, doc: FeedMetadata, table: Table) -> Table:
        """Columns the lake's files gained (ksqlDB added them) join the table's schema, with
        the name mapping; described properties follow the config."""
        tx = table.transaction()
        changed = False
        properties = {**self._described(feed), **TUNING}
        if any(table.properties.get(k) != v for k, v in properties.items()):
            tx.set_properties(properties)
            changed = True
        known = {field.name for field in table.schema().fields}
        if any(column.name not in known for column in doc.schema):
            file_schema = self.table_schema(feed, doc)
            if file_schema is not None and any(name not in known for name in file_schema.names):
                with tx.update_schema() as update:
                    update.union_by_name(file_schema)
                tx.set_properties({"schema.name-mapping.default": create_mapping_from_schema(
                    tx.table_metadata.schema()).model_dump_json()})
                changed = True
        return tx.commit_transaction() if changed else table

    def _data_file(self, feed: Feed, table: Table, item: tuple[str, FileEntry]) -> DataFile:
        """The Iceberg entry of one lake file, from its own footer: nothing is rewritten."""
        folder, entry = item
        path = self._feed_dir(feed) / folder / entry.name
        with self.lake.storage.open_read(path) as source:
            footer = pq.read_metadata(source)
        return entries.data_file(table, footer, uri=self._uri_of(path), folder=folder,
                                 size_bytes=entry.size_bytes)

    def _commit(self, feed: Feed, table: Table, doc: FeedMetadata, version: int | None,
                add: list[DataFile], drop: list[DataFile]) -> Table:
        summary = {snapshots.RUN_ID: _last_run(doc)}
        if version is not None:
            summary[snapshots.VERSION] = str(version)
        if isinstance(doc, StreamMetadata) and doc.watermark_ms is not None:
            summary[snapshots.WATERMARK] = str(doc.watermark_ms)
        tx = table.transaction()
        update = tx.update_snapshot(snapshot_properties=summary)
        producer: Any = update.overwrite() if drop else update.merge_append()
        with producer:
            for data_file in drop:
                producer.delete_data_file(data_file)
            for data_file in add:
                producer.append_data_file(data_file)
        failpoint("catalog.before_commit")
        table = tx.commit_transaction()
        failpoint("catalog.after_commit")
        snapshot = table.current_snapshot()
        log.info("catalog.committed", feed=feed.name, table=self.name(feed),
                 snapshot_id=snapshot.snapshot_id if snapshot else None,
                 added=len(add), removed=len(drop), version=version)
        return table

    def _expire(self, feed: Feed, table: Table, doc: FeedMetadata) -> int:
        """Expire the snapshots that name a file the lake no longer keeps (``snapshots``). A
        local lake renames compaction inputs to ``.<name>.retired`` right after the swap
        (``compaction.Compactor._hide``): their paths are gone at once, so there only listed
        files count as kept, not the retired ones in their grace."""
        hidden = self.lake.storage.atomic_rename
        paths = listed_paths(doc) if hidden else kept_paths(doc)
        kept = {self._uri_of(self._feed_dir(feed) / path) for path in paths}
        ids = snapshots.doomed(table, kept, stream=isinstance(doc, StreamMetadata))
        if not ids:
            return 0
        snapshots.expire(table, ids)
        log.info("catalog.snapshots_expired", feed=feed.name, table=self.name(feed),
                 count=len(ids), hint="they named files the lake has deleted, or were "
                 "past the stream's last 20 runs of time travel")
        return len(ids)

    # -- dropping --------------------------------------------------------------------------

    def drop(self, feed: Feed) -> bool:
        """Remove the feed's table from the catalog; its files stay in the lake (pyiceberg's
        ``drop_table`` deletes no data file; ``purge_table``, which would, is never used)."""
        with self._errors("dropping the table", feed.name):
            table = self.load(feed)
            if table is None:
                return False
            self._refuse_foreign(feed, table)  # never someone else's table
            try:
                self.catalog().drop_table(self.identifier(feed))
            except NoSuchTableError:
                return False
        log.warning("catalog.table_dropped", feed=feed.name, table=self.name(feed),
                    hint="the lake's files are kept; `lakeexportd catalog sync` registers "
                    "the feed again")
        return True


def _current_version(doc: FeedMetadata | None) -> int | None:
    return doc.current_version if isinstance(doc, TableMetadata) else None


def _last_run(doc: FeedMetadata) -> str:
    runs = [r.run_id for r in doc.exports if r.status == "success"]
    return runs[-1] if runs else ""

