"""Fixtures shared by every test module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from lakecheck import close_clients
from objectstores import (
    Azurite,
    Bucket,
    MotoS3,
    ServerStartError,
    azure_container_on,
    s3_bucket_on,
    start_azurite,
    start_moto,
)
from pgserver import PostgresDatabase, PostgresServer, start_postgres


@pytest.fixture(autouse=True)
def _close_ksqldb_clients() -> Iterator[None]:
    """Close the HTTP clients a test opened through ``lakecheck.exporter``."""
    yield
    close_clients()


Server = TypeVar("Server")


def _start_or_fail(start: Callable[[], Server]) -> Server:
    """Start a test server; if it cannot start, fail (never skip) with what to run."""
    try:
        return start()
    except ServerStartError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A real S3 server (``python -m moto.server``, its own process) on a free 127.0.0.1 port.

    Gives ``endpoint``, ``region``, ``access_key_id``, ``secret_access_key``, ``config`` (obstore
    keys), ``create_bucket()`` and ``store(bucket)``; stopped by PID when the session ends.
    """
    server = _start_or_fail(lambda: start_moto(tmp_path_factory.mktemp("moto")))
    try:
        yield server
    finally:
        server.server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A real Azure Blob server (``azurite-blob`` from tools/azurite) on a free 127.0.0.1 port.

    Gives ``endpoint`` (``http://127.0.0.1:PORT/devstoreaccount1``), ``account_name``,
    ``account_key`` (the emulator's well-known ones), ``config``, ``create_container()``,
    ``store(container)`` and ``request(...)`` (SharedKey-signed raw REST); stopped by PID.
    """
    server = _start_or_fail(lambda: start_azurite(tmp_path_factory.mktemp("azurite")))
    try:
        yield server
    finally:
        server.server.stop()


@pytest.fixture
def s3_bucket(moto_s3: MotoS3) -> Bucket:
    """A fresh empty bucket on ``moto_s3`` and an obstore ``S3Store`` for it."""
    return s3_bucket_on(moto_s3)


@pytest.fixture
def azure_container(azurite: Azurite) -> Bucket:
    """A fresh empty container on ``azurite`` and an obstore ``AzureStore`` for it."""
    return azure_container_on(azurite)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 server (``tests/pgserver.py``) on a free 127.0.0.1 port.

    Gives ``host``, ``port``, ``user``/``password`` (the ``lakeexportd`` role), ``database``
    (``catalog``, owned by it), ``url`` (``postgresql+psycopg2://...``), ``create_database()``,
    ``pause()``/``resume()``/``paused()`` (SIGSTOP/SIGCONT: a hung server), ``down()`` (stopped,
    then started again on the same port) and ``stop()``; stopped by PID, its directory removed.
    """
    server = _start_or_fail(start_postgres)
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_database(postgres: PostgresServer) -> Iterator[PostgresDatabase]:
    """A fresh empty database on ``postgres`` for this test alone (``.url``, ``.name``)."""
    database = postgres.create_database()
    try:
        yield database
    finally:
        postgres.drop_database(database.name)
