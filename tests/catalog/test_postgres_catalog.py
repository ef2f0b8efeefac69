"""pyiceberg's SqlCatalog on a real PostgreSQL 15 (``tests/pgserver.py``): what the catalogue
(DESIGN section 13) can rely on when two daemons register the same lake file.

Seen with pyiceberg 0.12.0, SQLAlchemy 2.1, psycopg2 2.9, PostgreSQL 15:

- Two catalogs ("daemons") that loaded the same table version and both add the same Parquet file:
  the first commit wins; with ``commit.retry.num-retries=0`` the second raises
  ``CommitFailedException`` and the table lists the file once. That holds whether the loser's
  view is stale before it commits (pyiceberg's requirement check: "branch main has changed")
  or the winner lands inside the loser's commit (the SQL compare-and-swap on
  ``metadata_location``: "Table has been updated by another process").
- With the default (4 retries) the loser refreshes and re-applies its ``add_files`` on top of
  the winner's snapshot: the commit succeeds and the file is listed **twice** (its rows are read
  twice). The duplicate-file check of ``add_files`` runs when the file is added to the
  transaction, not on a retry. Hence the catalogue sets ``commit.retry.num-retries=0`` and
  decides itself what a lost race means.
- SqlCatalog passes only ``echo`` and ``pool_pre_ping`` to ``create_engine``: no property
  carries ``connect_args``. A connect timeout goes in the ``uri``'s query
  (``...?connect_timeout=N``), which SQLAlchemy's psycopg2 dialect hands to libpq (libpq's
  minimum is 2 s). A hung server then fails the connect with "timeout expired"; a stopped one
  refuses at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy.exc
from pgserver import PostgresDatabase, PostgresServer
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table, Transaction

NAMESPACE = "lake"
TABLE = "lake.orders"
SCHEMA = pa.schema([("id", pa.int64()), ("amount", pa.float64())])
NO_RETRIES = {"commit.retry.num-retries": "0"}


class RacingCatalog(SqlCatalog):
    """A SqlCatalog that runs ``before_swap`` once, between writing a commit's metadata file and
    swapping the table's ``metadata_location`` row: where another daemon's commit can land."""

    before_swap: Callable[[], object] | None = None

    def _write_metadata(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super()._write_metadata(*args, **kwargs)
        hook, self.before_swap = self.before_swap, None
        if hook is not None:
            hook()


def daemon_catalog(database: PostgresDatabase, warehouse: Path, uri_query: str = "") -> RacingCatalog:
    """What one daemon opens: a SqlCatalog on the shared database and warehouse."""
    return RacingCatalog("lake", uri=database.url + uri_query, warehouse=warehouse.as_uri())


def lake_file(folder: Path, name: str, ids: list[int]) -> Path:
    """A small Parquet file as the lake writes them: the truth the table is checked against."""
    path = folder / name
    pq.write_table(pa.table({"id": ids, "amount": [i * 1.5 for i in ids]}, schema=SCHEMA), path)
    return path


def listed_files(table: Table) -> list[str]:
    """The data files of the table's current snapshot, one entry per manifest entry."""
    table.refresh()
    return sorted(task.file.file_path for task in table.scan().plan_files())


def rows_of(*files: Path) -> list[int]:
    return sorted(i for f in files for i in pq.read_table(f).column("id").to_pylist())


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse"
    path.mkdir()
    return path


def new_table(database: PostgresDatabase, warehouse: Path, properties: dict[str, str]) -> None:
    catalog = daemon_catalog(database, warehouse)
    catalog.create_namespace(NAMESPACE)
    catalog.create_table(TABLE, schema=SCHEMA, properties=properties)
    catalog.engine.dispose()


Daemon = tuple[RacingCatalog, Table, Transaction]


def both_add(database: PostgresDatabase, warehouse: Path,
             tmp_path: Path) -> tuple[Path, Daemon, Daemon]:
    """One new file, and two daemons that each loaded the table and staged adding it."""
    new = lake_file(tmp_path, "part-0.parquet", [1, 2, 3])
    daemons = []
    for _ in range(2):
        catalog = daemon_catalog(database, warehouse)
        table = catalog.load_table(TABLE)
        tx = table.transaction()
        tx.add_files([str(new)])
        daemons.append((catalog, table, tx))
    return new, daemons[0], daemons[1]


def test_server_authenticates_the_lakeexportd_role(postgres: PostgresServer) -> None:
    """The role connects with its password over TCP and owns ``catalog``; a wrong password is refused."""
    engine = sqlalchemy.create_engine(postgres.url)
    with engine.connect() as connection:
        owner = connection.execute(sqlalchemy.text(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        )).scalar_one()
    engine.dispose()
    assert owner == "lakeexportd"
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.user,
                         password="wrong", dbname=postgres.database, connect_timeout=5)


def test_stale_daemon_loses_without_retries(postgres_database: PostgresDatabase, warehouse: Path,
                                            tmp_path: Path) -> None:
    """Two daemons load the same version and add the same file: one commit wins, the other
    raises CommitFailedException, and the table lists the file once."""
    new_table(postgres_database, warehouse, NO_RETRIES)
    first = lake_file(tmp_path, "part-0.parquet", [1, 2])
    new = lake_file(tmp_path, "part-1.parquet", [3, 4, 5])
    one, two = daemon_catalog(postgres_database, warehouse), daemon_catalog(postgres_database, warehouse)
    one.load_table(TABLE).add_files([str(first)])

    table_one, table_two = one.load_table(TABLE), two.load_table(TABLE)
    tx_one, tx_two = table_one.transaction(), table_two.transaction()
    tx_one.add_files([str(new)])
    tx_two.add_files([str(new)])
    tx_one.commit_transaction()
    with pytest.raises(CommitFailedException, match="branch main has changed"):
        tx_two.commit_transaction()

    assert listed_files(table_two) == sorted([str(first), str(new)])
    scanned = table_two.scan().to_arrow().column("id").to_pylist()
    assert sorted(scanned) == rows_of(first, new)
    one.engine.dispose()
    two.engine.dispose()


def test_commit_landing_inside_another_commit_is_refused(postgres_database: PostgresDatabase,
                                                          warehouse: Path, tmp_path: Path) -> None:
    """A daemon's commit that lands between another's metadata write and its row swap makes the
    swap match no row in PostgreSQL: CommitFailedException, the file listed once."""
    new_table(postgres_database, warehouse, NO_RETRIES)
    new, (one, table_one, tx_one), (two, _, tx_two) = both_add(postgres_database, warehouse,
                                                                tmp_path)
    two.before_swap = tx_one.commit_transaction

    with pytest.raises(CommitFailedException, match="updated by another process"):
        tx_two.commit_transaction()

    assert two.before_swap is None  # the hook ran: daemon one committed inside two's commit
    assert listed_files(table_one) == [str(new)]
    assert sorted(table_one.scan().to_arrow().column("id").to_pylist()) == rows_of(new)
    one.engine.dispose()
    two.engine.dispose()


def test_default_retries_register_the_file_twice(postgres_database: PostgresDatabase,
                                                 warehouse: Path, tmp_path: Path) -> None:
    """Why the catalogue sets commit.retry.num-retries=0: with pyiceberg's default retries the
    losing daemon re-applies its add on top of the winner's, and the file is listed twice."""
    new_table(postgres_database, warehouse, {"commit.retry.min-wait-ms": "10"})
    new, (one, table_one, tx_one), (two, _, tx_two) = both_add(postgres_database, warehouse,
                                                                tmp_path)
    tx_one.commit_transaction()
    tx_two.commit_transaction()  # no error: the retry "succeeds"

    assert listed_files(table_one) == [str(new), str(new)]
    assert len(table_one.snapshots()) == 2
    assert sorted(table_one.scan().to_arrow().column("id").to_pylist()) == rows_of(new, new)
    one.engine.dispose()
    two.engine.dispose()


def test_connect_timeout_in_the_uri_bounds_a_hung_server(postgres: PostgresServer,
                                                         postgres_database: PostgresDatabase,
                                                         warehouse: Path) -> None:
    """A server that accepts TCP and answers nothing (SIGSTOP) fails the catalog's connect with
    libpq's "timeout expired" when the uri carries connect_timeout; it works again after."""
    new_table(postgres_database, warehouse, NO_RETRIES)
    with postgres.paused(), pytest.raises(sqlalchemy.exc.OperationalError, match="timeout expired"):
        daemon_catalog(postgres_database, warehouse, "?connect_timeout=2")
    catalog = daemon_catalog(postgres_database, warehouse, "?connect_timeout=2")
    assert catalog.list_tables(NAMESPACE) == [("lake", "orders")]
    catalog.engine.dispose()


def test_stopped_server_refuses_and_keeps_the_catalog(postgres: PostgresServer,
                                                      postgres_database: PostgresDatabase,
                                                      warehouse: Path, tmp_path: Path) -> None:
    """A stopped server refuses the connect; started again on the same port, the table and its
    files are as they were."""
    new_table(postgres_database, warehouse, NO_RETRIES)
    new = lake_file(tmp_path, "part-0.parquet", [7, 8])
    catalog = daemon_catalog(postgres_database, warehouse, "?connect_timeout=2")
    catalog.load_table(TABLE).add_files([str(new)])
    catalog.engine.dispose()
    with postgres.down(), pytest.raises(sqlalchemy.exc.OperationalError, match="Connection refused"):
        daemon_catalog(postgres_database, warehouse, "?connect_timeout=2")
    catalog = daemon_catalog(postgres_database, warehouse, "?connect_timeout=2")
    assert listed_files(catalog.load_table(TABLE)) == [str(new)]
    catalog.engine.dispose()


def test_pause_stops_the_postmaster_and_every_backend(postgres: PostgresServer) -> None:
    """``pause`` stops the backend of an open connection too (each backend leads its own process
    group, so a killpg of the postmaster's would miss it); ``resume`` lets it answer again."""
    connection = psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.user,
                                  password=postgres.password, dbname=postgres.database)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    postmaster = postgres.pid()
    assert postmaster is not None
    with postgres.paused():
        states = {pid: process_state(pid) for pid in (postmaster, backend)}
    assert states == {postmaster: "T", backend: "T"}
    assert "T" not in {process_state(postmaster), process_state(backend)}
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    connection.close()


def process_state(pid: int) -> str:
    """The one-letter state in /proc/<pid>/stat: T when stopped by a signal."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]
