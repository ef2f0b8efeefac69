"""Two writers creating the same catalog object at once (both found by the two-daemon system
test, tests/system/test_catalog_postgres.py): each lost race was a feed marked behind.

- The namespace: pyiceberg's ``SqlCatalog.create_namespace`` checks that it is absent, then
  inserts its row; another writer's insert landing in between fails ours on the primary key
  with an ``IntegrityError`` pyiceberg does not translate. A daemon's workers registering their
  first feeds together, or two daemons, hit it.
- The catalog's own tables: ``SqlCatalog`` creates them on open when it sees none. Two daemons
  opening a new database at once both run ``CREATE TABLE``: the second fails with "relation
  already exists" if the first committed after its look, or, if PostgreSQL made it wait for the
  first's transaction, on ``pg_type_typname_nsp_index``.

Each race is staged, not hoped for: the other writer's step lands exactly in the window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy
from lakecheck import NOW, exporter, feed
from pgserver import PostgresDatabase
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog, SqlCatalogBaseTable
from pyiceberg.typedef import Identifier
from sqlalchemy.engine import Engine

from lakeexportd.catalog import connection
from lakeexportd.catalog.iceberg import LakeCatalog
from lakeexportd.config.model import CatalogSettings
from lakeexportd.lake.configured import ConfiguredLake
from lakeexportd.lake.storage import LOCAL
from lakeexportd.sandbox import Sandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=5, preload=50, preload_days=1) as sb:
        yield sb


class LateNamespaceCatalog(SqlCatalog):
    """A SqlCatalog that runs ``after_check`` once, right after its "does the namespace
    exist?" query answered: where another writer's create can land."""

    after_check: Callable[[], object] | None = None

    def namespace_exists(self, namespace: str | Identifier) -> bool:
        exists = super().namespace_exists(namespace)
        hook, self.after_check = self.after_check, None
        if hook is not None:
            hook()
        return exists


def test_a_namespace_created_between_check_and_insert_is_used(
    sandbox: Sandbox, tmp_path: Path, postgres_database: PostgresDatabase,
) -> None:
    """Another writer creates the namespace after our existence check: the sync still creates
    the feed's table in it and registers the feed's files."""
    root = tmp_path / "lake"
    tx = feed("tx", "TRANSACTION_FLATTENED")
    assert exporter(sandbox.url, root).export(tx, NOW).rows == 50
    catalog = LakeCatalog(CatalogSettings(uri=postgres_database.url),
                          ConfiguredLake(LOCAL, root, str(root)))
    properties = connection.properties(catalog.settings, catalog.lake)
    racing = LateNamespaceCatalog("lakeexportd", **properties)
    other = SqlCatalog("lakeexportd", **properties)
    racing.after_check = lambda: other.create_namespace("lake")
    catalog._catalog = racing  # the catalog it would open itself, with the hook
    try:
        result = catalog.sync(tx)
    finally:
        catalog.close()
        other.engine.dispose()
    assert result.created and result.added >= 1
    assert racing.after_check is None, "the race was never staged"
    table = other.load_table(("lake", "tx"))
    assert table.scan().to_arrow().num_rows == 50


def waiting_on_a_lock(database: PostgresDatabase) -> bool:
    """A session of the database waits for a lock (another transaction holds it)."""
    connection = database.server.admin_connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                           "AND wait_event_type = 'Lock'", (database.name,))
            row = cursor.fetchone()
    finally:
        connection.close()
    return row is not None and row[0] > 0


def test_catalog_tables_created_by_another_daemon_meanwhile_are_used(
    tmp_path: Path, postgres_database: PostgresDatabase,
) -> None:
    """Another daemon creates the catalog's tables in a transaction still open when we look
    (we see none and create them too; PostgreSQL makes our CREATE wait); it commits: ours
    fails on pg_type, and the open still succeeds on the tables it made."""
    root = tmp_path / "lake"
    catalog = LakeCatalog(CatalogSettings(uri=postgres_database.url),
                          ConfiguredLake(LOCAL, root, str(root)))
    engine = sqlalchemy.create_engine(postgres_database.url)
    opened: list[Catalog | BaseException] = []

    def open_catalog() -> None:
        try:
            opened.append(catalog.catalog())
        except BaseException as exc:  # handed to the test's thread
            opened.append(exc)

    try:
        with engine.connect() as other:
            transaction = other.begin()
            SqlCatalogBaseTable.metadata.create_all(other)  # not committed: invisible to us
            thread = threading.Thread(target=open_catalog)
            thread.start()
            deadline = time.monotonic() + 30
            while not waiting_on_a_lock(postgres_database) and thread.is_alive():
                assert time.monotonic() < deadline, "our CREATE TABLE never waited"
                time.sleep(0.05)
            assert thread.is_alive(), f"the open ended without racing: {opened}"
            transaction.commit()
        thread.join(30)
        assert opened and isinstance(opened[0], SqlCatalog), opened
        assert opened[0].list_namespaces() == []
    finally:
        catalog.close()
        engine.dispose()


def test_catalog_tables_committed_by_another_daemon_just_before_our_create_are_used(
    tmp_path: Path, postgres_database: PostgresDatabase,
) -> None:
    """We see no catalog tables; another daemon creates and commits them right before our
    ``CREATE TABLE iceberg_tables`` runs: ours fails "already exists", the open succeeds."""
    root = tmp_path / "lake"
    catalog = LakeCatalog(CatalogSettings(uri=postgres_database.url),
                          ConfiguredLake(LOCAL, root, str(root)))
    other = sqlalchemy.create_engine(postgres_database.url)
    staged: list[str] = []

    def before_create(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.strip().startswith("CREATE TABLE iceberg_tables") and not staged:
            staged.append(statement)
            SqlCatalogBaseTable.metadata.create_all(other)  # its own transaction, committed

    sqlalchemy.event.listen(Engine, "before_cursor_execute", before_create)
    try:
        opened = catalog.catalog()
        assert staged, "the race was never staged"
        assert isinstance(opened, SqlCatalog) and opened.list_namespaces() == []
    finally:
        sqlalchemy.event.remove(Engine, "before_cursor_execute", before_create)
        catalog.close()
        other.dispose()
