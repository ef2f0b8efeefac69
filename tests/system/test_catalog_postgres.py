"""The catalogue on a real PostgreSQL (issue 14, req. 3 and 6): two daemons, outages.

Two real ``lakeexportd run`` daemons share one config: one S3 lake on moto (leases: one writer
per feed at a time) and one PostgreSQL catalog (``tests/pgserver.py``; the password through
``password_env``, the URI without it). Each file is registered once, every listed file exists
and the catalog's rows are the sandbox's rows exactly once. Then the catalog is stopped
(``down``) while ``lakeexportd export`` runs: exports go on, each feed is logged behind,
``metadata list`` says so, the files a retention drop deletes are kept until
``lakeexportd catalog sync`` brings the tables level. And frozen (``pause``: SIGSTOP) under a
daemon holding open connections: its runs go on behind (the sync's watchdog,
``lakeexportd_catalog_behind``), and a run after SIGCONT catches up.

The rows arrive from a thread calling ``Sandbox.generate`` rather than the sandbox's own
``rate``: it can be stopped, so a table's truth is known when the test compares.

The judge is independent of ``lakeexportd.catalog``: pyiceberg's own ``SqlCatalog`` opened on
the PostgreSQL database, the feed's ``_metadata.json`` read as JSON, the store's listing, and
the sandbox's rows.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import obstore
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from daemonproc import DaemonProcess, free_port, stop_all, wait_for
from lakecheck import assert_exactly_once
from objectlake import document, feed_prefix, listed, objects, store_config
from objectstores import Bucket
from pgserver import PostgresDatabase, PostgresServer
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table
from scrape import value

from lakeexportd.sandbox import Sandbox

PASSWORD_ENV = "CATALOG_PASSWORD"
TX = {"name": "tx", "source": "TRANSACTION_FLATTENED", "kind": "stream"}
ANON = {"name": "anon", "source": "TRANSACTION_ANONYMIZED", "kind": "stream"}
USERS = {"name": "users", "source": "USER_SUMMARY", "kind": "table"}
FOLDER = {"stream": "streams", "table": "tables"}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=14, preload=300, preload_days=2, rate=0, max_disorder_ms=0) as sb:
        yield sb


# --- the config, the daemons, their logs ------------------------------------------------------


def catalog_yaml(database: PostgresDatabase, timeout: str | None) -> str:
    """``catalog:`` as an operator writes it: the role in the URI, the password from the env."""
    server = database.server
    uri = f"postgresql://{server.user}@{server.host}:{server.port}/{database.name}"
    limit = f", timeout: {timeout}" if timeout else ""
    return f"{{uri: '{uri}', password_env: {PASSWORD_ENV}{limit}}}"


def write_config(folder: Path, sandbox: Sandbox, lake: str, database: PostgresDatabase,
                 feeds: list[dict[str, Any]], *, timeout: str | None = None) -> tuple[Path, int]:
    """A daemon's folder: its config, its metrics port, its ``logging.dir``."""
    folder.mkdir(exist_ok=True)
    port = free_port()
    path = folder / "lakeexportd.yaml"
    path.write_text(
        f"ksqldb: {{url: '{sandbox.url}', max_retries: 1, connect_timeout: 2s}}\n"
        f"lake: {lake}\n"
        f"catalog: {catalog_yaml(database, timeout)}\n"
        "scheduler: {workers: 3, stop_grace: 20s, lock_wait: 0.5s}\n"
        "defaults: {schedule: {every: 1s}, settle_delay: 1s}\n"
        f"metrics: {{listen: '127.0.0.1:{port}'}}\n"
        f"logging: {{dir: '{folder / 'logs'}', level: info}}\n"
        f"feeds: {json.dumps(feeds)}\n"
    )
    return path, port


def events(config: Path) -> list[dict[str, Any]]:
    """Every JSON line a daemon wrote to its ``logging.dir``, in time order."""
    found = []
    for log in sorted((config.parent / "logs").glob("*.log")):
        found += [json.loads(line) for line in log.read_text().splitlines() if line]
    return sorted(found, key=lambda e: e["timestamp"])


def cli_events(stderr: str) -> list[dict[str, Any]]:
    """The events a one-shot command wrote on stderr (structlog's console rendering:
    ``<time> [<level>] <event> key=value ...``): level, event, feed and the whole line."""
    found = []
    for line in stderr.splitlines():
        match = re.match(r"\S+ \S+ \[(\w+)\s*\] (\S+)", line)
        if match:
            feed = re.search(r"\bfeed=(\w+)", line)
            found.append({"level": match[1], "event": match[2],
                          "feed": feed[1] if feed else None, "line": line})
    return found


class Daemons:
    """Daemons a test started; all stopped (SIGTERM, then SIGKILL of the group) at the end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started: list[DaemonProcess] = []

    def start(self, *configs: tuple[Path, int]) -> list[DaemonProcess]:
        """Start a daemon on each (config, metrics port), all at once, and wait until each
        is ready."""
        daemons = [DaemonProcess(config, port, self.env) for config, port in configs]
        self.started += daemons
        for daemon in daemons:
            daemon.wait_ready()
        return daemons

    def stop(self) -> None:
        """SIGTERM every daemon (once: a daemon that has stopped restores the default
        handler, so a second SIGTERM would kill it), then wait for each: each exits 0."""
        for daemon in self.started:
            daemon.send(signal.SIGTERM)
        for daemon in self.started:
            assert daemon.proc.wait(60) == 0, daemon.stderr

    def close(self) -> None:
        stop_all(self.started)


@pytest.fixture
def daemons(postgres: PostgresServer) -> Iterator[Daemons]:
    started = Daemons({PASSWORD_ENV: postgres.password})
    yield started
    started.close()


class Producer:
    """The source producing rows in the background (a few every 0.2 s) until ``stop``."""

    def __init__(self, sandbox: Sandbox, rows: int = 3, every: float = 0.2) -> None:
        self.halt = threading.Event()
        self.stopped_at: dt.datetime | None = None

        def produce() -> None:
            while not self.halt.wait(every):
                sandbox.generate(rows)

        self.thread = threading.Thread(target=produce, name="producer", daemon=True)
        self.thread.start()

    def stop(self) -> dt.datetime:
        self.halt.set()
        self.thread.join(10)
        self.stopped_at = dt.datetime.now(dt.UTC)
        return self.stopped_at


# --- the independent judge: pyiceberg on PostgreSQL, the JSON, the store ------------------------


def reader(database: PostgresDatabase, bucket: Bucket | None = None) -> SqlCatalog:
    """pyiceberg's SqlCatalog on the catalog's database (the FileIO reads the lake's bucket)."""
    io = {} if bucket is None else {
        "s3.endpoint": bucket.config["endpoint"], "s3.region": bucket.config["region"],
        "s3.access-key-id": bucket.config["access_key_id"],
        "s3.secret-access-key": bucket.config["secret_access_key"]}
    # The SQL catalog's rows carry the catalog's name: lakeexportd's is "lakeexportd". A judge
    # only reads: it never creates the catalog's tables (lakeexportd must have).
    return SqlCatalog("lakeexportd", uri=database.url, init_catalog_tables="false", **io)


def registered(table: Table) -> list[str]:
    """The data file paths of the table's current snapshot, one per manifest entry."""
    return [task.file.file_path for task in table.scan().plan_files()]


class Lake:
    """What a test knows of its lake without lakeexportd: the JSON document, the files."""

    def __init__(self, document_of: Callable[[str, str], dict[str, Any] | None],
                 exists: Callable[[str, str, str], bool], uri: Callable[[str, str], str]) -> None:
        self.document = document_of  # (kind, feed) -> parsed _metadata.json
        self.exists = exists  # (kind, feed, relative path) -> the file is there
        self.uri = uri  # (kind, feed) -> the URI of the feed folder, as Iceberg records it

    def listed(self, kind: str, feed: str) -> set[str]:
        """URIs of the files the document lists (a table: its current version's)."""
        doc = self.document(kind, feed)
        assert doc is not None, f"{feed} has no _metadata.json"
        paths = listed(doc)
        if kind == "table":
            paths = {p for p in paths if p.startswith(f"version=v{doc['current_version']}/")}
        return {f"{self.uri(kind, feed)}/{p}" for p in paths}


def local_lake(root: Path) -> Lake:
    def doc(kind: str, feed: str) -> dict[str, Any] | None:
        path = root / FOLDER[kind] / feed / "_metadata.json"
        return json.loads(path.read_text()) if path.exists() else None

    return Lake(doc, lambda kind, feed, rel: (root / FOLDER[kind] / feed / rel).is_file(),
                lambda kind, feed: f"file://{root}/{FOLDER[kind]}/{feed}")


def s3_lake(bucket: Bucket) -> Lake:
    def exists(kind: str, feed: str, rel: str) -> bool:
        try:
            obstore.head(bucket.store, feed_prefix("lake", kind, feed) + rel)
        except FileNotFoundError:
            return False
        return True

    return Lake(lambda kind, feed: document(bucket, "lake", kind, feed), exists,
                lambda kind, feed: f"s3://{bucket.name}/lake/{FOLDER[kind]}/{feed}")


def assert_level(judge: SqlCatalog, lake: Lake, kind: str, feed: str) -> Table:
    """The feed's table lists each file once, exactly the document's files, all present."""
    table = judge.load_table(("lake", feed))
    files = registered(table)
    twice = [path for path, count in Counter(files).items() if count > 1]
    assert not twice, f"{feed}: files registered more than once: {twice}"
    assert set(files) == lake.listed(kind, feed), feed
    prefix = lake.uri(kind, feed) + "/"
    for path in files:
        assert path.startswith(prefix) and lake.exists(kind, feed, path[len(prefix):]), path
    if kind == "table":
        doc = lake.document(kind, feed)
        assert doc is not None
        summary = table.current_snapshot().summary  # type: ignore[union-attr]
        assert summary is not None
        assert summary.additional_properties["lakeexportd.version"] == \
            str(doc["current_version"])
    return table


def assert_rows(table: Table, kind: str, truth: pa.Table, key: str) -> None:
    """The rows pyiceberg reads are the sandbox's, each once (a stream's partition columns,
    filled from each file's folder, are there and name a real day)."""
    rows = table.scan().to_arrow()
    if kind == "stream":
        for column in ("year", "month", "day"):
            assert rows.column(column).null_count == 0, column
        assert min(rows.column("year").to_pylist()) >= 2000
    columns = [c for c in truth.column_names if c in rows.column_names]
    assert set(truth.column_names) - set(columns) <= {"ROWTIME"}  # a table's files have none
    assert_exactly_once(rows.select(columns).cast(truth.select(columns).schema),
                        truth.select(columns), key=key)


def stream_truth(sandbox: Sandbox, source: str, watermark_ms: int) -> pa.Table:
    """The source's rows the committed watermark covers."""
    truth = sandbox.arrow(source)
    return truth.filter(pc.less_equal(truth.column("ROWTIME"), watermark_ms))


# --- 1. two daemons, one S3 lake, one PostgreSQL catalog ----------------------------------------


def test_two_daemons_on_one_postgres_catalog_register_each_file_once(
    tmp_path: Path, sandbox: Sandbox, s3_bucket: Bucket, postgres_database: PostgresDatabase,
    daemons: Daemons,
) -> None:
    """Two daemons, one config, one S3 lake (leases), one PostgreSQL catalog, two streams and
    a table, rows arriving all along: both daemons export and register files, and at the end
    each feed's current snapshot lists every file of its ``_metadata.json`` once, nothing
    else, every one present; pyiceberg reads the sandbox's rows exactly once."""
    flow, _, secret, root = store_config(s3_bucket)
    daemons.env["LAKE_SECRET"] = secret
    lake_yaml = f"{{root: '{root}', lease_ttl: 3s, storage: {flow}}}"
    feeds = [TX, ANON, USERS]
    written = [write_config(tmp_path / name, sandbox, lake_yaml, postgres_database, feeds)
               for name in ("a", "b")]
    configs = [config for config, _ in written]
    producer = Producer(sandbox)
    try:
        daemons.start(*written)

        def registered_by(config: Path) -> set[str]:
            return {e["feed"] for e in events(config)
                    if e["event"] == "catalog.committed" and e["added"] > 0}

        # Both daemons must have registered files: else nothing here is about sharing.
        wait_for(lambda: all(registered_by(c) for c in configs)
                 and set().union(*map(registered_by, configs)) == {"tx", "anon", "users"},
                 90, "both daemons registering files, every feed registered")
    finally:
        stopped = producer.stop()
    newest = max(sandbox.arrow("TRANSACTION_FLATTENED").column("ROWTIME").to_pylist())
    lake = s3_lake(s3_bucket)

    def caught_up() -> bool:
        for feed in ("tx", "anon"):
            doc = lake.document("stream", feed)
            if doc is None or (doc["watermark"]["rowtime_ms"] or -1) < newest:
                return False
        doc = lake.document("table", "users")
        return doc is not None and any(
            e["status"] == "success" and dt.datetime.fromisoformat(e["started"]) > stopped
            and e.get("version") == doc["current_version"] for e in doc["exports"])

    wait_for(caught_up, 60, "watermarks past the newest row and a table version after it")
    daemons.stop()

    judge = reader(postgres_database, s3_bucket)
    assert sorted(judge.list_tables("lake")) == [("lake", "anon"), ("lake", "tx"),
                                                 ("lake", "users")]
    for feed, source in (("tx", "TRANSACTION_FLATTENED"), ("anon", "TRANSACTION_ANONYMIZED")):
        table = assert_level(judge, lake, "stream", feed)
        doc = lake.document("stream", feed)
        assert doc is not None
        truth = stream_truth(sandbox, source, doc["watermark"]["rowtime_ms"])
        assert truth.num_rows == sandbox.arrow(source).num_rows  # every row was exported
        assert_rows(table, "stream", truth, "TRANSACTION_ID")
    table = assert_level(judge, lake, "table", "users")
    assert_rows(table, "table", sandbox.arrow("USER_SUMMARY"), "USER_ID")
    # The lake holds nothing beyond the listed files and lakeexportd's own objects.
    for kind, feed in (("stream", "tx"), ("stream", "anon"), ("table", "users")):
        doc = lake.document(kind, feed)
        present = {k for k in objects(s3_bucket, "lake", kind, feed)
                   if k not in ("_metadata.json", "_lease.json")}
        assert present == listed(doc), feed
    for config in configs:
        bad = [e for e in events(config) if e["level"] in ("error", "critical")
               or e["event"] == "catalog.behind"]
        assert not bad, [e.get("error") for e in bad]


# --- 2. the catalog down: exports go on, the next run catches up --------------------------------


def cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lakeexportd", *argv],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def export(config: Path, env: dict[str, str], *feeds: str) -> subprocess.CompletedProcess[str]:
    return cli("export", "-c", str(config), *feeds, env=env)


def catalog_states(config: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each feed's catalog state as ``lakeexportd metadata list --json`` gives it."""
    shown = cli("metadata", "list", "-c", str(config), "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    return {row["feed"]: row["catalog"] for row in json.loads(shown.stdout)}


def version_files(root: Path, version: int) -> list[Path]:
    return sorted((root / "tables/users" / f"version=v{version}").glob("*.parquet"))


def test_catalog_down_exports_go_on_and_the_next_run_catches_up(
    tmp_path: Path, sandbox: Sandbox, postgres: PostgresServer,
    postgres_database: PostgresDatabase,
) -> None:
    """PostgreSQL stopped: ``lakeexportd export`` still commits rows, logs ``catalog.behind``
    naming each feed, and keeps the table version its retention drops (the catalog still
    lists it); PostgreSQL back: ``metadata list`` says behind, ``lakeexportd catalog sync``
    makes every table level and deletes that version."""
    root = tmp_path / "lake"
    users = {**USERS, "retention_versions": 1}
    config, _ = write_config(tmp_path / "cli", sandbox, f"{{root: '{root}'}}",
                             postgres_database, [TX, users])
    env = {PASSWORD_ENV: postgres.password}
    lake = local_lake(root)
    judge = reader(postgres_database)

    first = export(config, env, "tx", "users")
    assert first.returncode == 0, first.stderr
    behind = [e["line"] for e in cli_events(first.stderr) if e["event"] == "catalog.behind"]
    assert not behind, behind
    assert_level(judge, lake, "table", "users")
    v1 = version_files(root, 1)
    assert v1

    sandbox.generate(40)
    with postgres.down():
        down = export(config, env, "tx", "users")
        assert down.returncode == 0, down.stderr
        behind = [e for e in cli_events(down.stderr) if e["event"] == "catalog.behind"]
        assert {e["feed"] for e in behind} == {"tx", "users"}
        assert all(e["level"] == "warning" and "The lake is unaffected" in e["line"]
                   for e in behind)
        doc = lake.document("table", "users")
        assert doc is not None and doc["current_version"] == 2
        assert [v["version"] for v in doc["versions"]] == [2]
        assert [p.exists() for p in v1] == [True] * len(v1), "a file the catalog lists was deleted"
        tx = lake.document("stream", "tx")
        assert tx is not None and tx["exports"][-1]["status"] == "success"
        assert tx["exports"][-1]["records"] > 0  # committed while the catalog was down

    # Reachable again, and behind until something syncs: `metadata list` says so.
    states = catalog_states(config, env)
    assert set(states) == {"tx", "users"}
    for state in states.values():
        assert not state["level"] and state["state"].startswith("behind"), state
    catch_up = cli("catalog", "sync", "-c", str(config), env=env)
    assert catch_up.returncode == 0, catch_up.stderr
    for run in (first, down, catch_up):  # the catalog's password is in no line, failed or not
        assert postgres.password not in run.stdout + run.stderr
    assert [p.exists() for p in v1] == [False] * len(v1), "the deferred delete never came"
    judge = reader(postgres_database)  # the old one's connections died with the server
    tx_table = assert_level(judge, lake, "stream", "tx")
    tx_doc = lake.document("stream", "tx")
    assert tx_doc is not None
    assert_rows(tx_table, "stream", stream_truth(sandbox, "TRANSACTION_FLATTENED",
                                                 tx_doc["watermark"]["rowtime_ms"]),
                "TRANSACTION_ID")
    assert_level(judge, lake, "table", "users")


# --- 3. the catalog frozen: the watchdog marks the feed behind ---------------------------------


def test_catalog_frozen_the_export_completes_behind_and_catches_up_after(
    tmp_path: Path, sandbox: Sandbox, postgres: PostgresServer,
    postgres_database: PostgresDatabase, daemons: Daemons,
) -> None:
    """A daemon with open connections to a SIGSTOPped PostgreSQL (``catalog.timeout: 2s``):
    its runs still commit rows, log ``catalog.behind`` (the sync's watchdog) and set
    ``lakeexportd_catalog_behind``; SIGCONT: a later run brings the table level (metric 0)."""
    root = tmp_path / "lake"
    config, port = write_config(tmp_path / "daemon", sandbox, f"{{root: '{root}'}}",
                                postgres_database, [TX], timeout="2s")
    lake = local_lake(root)
    (daemon,) = daemons.start((config, port))

    def behind_metric() -> float | None:
        return value(daemon.scrape(), "lakeexportd_catalog_behind", feed="tx")

    def registered_after(start: int) -> bool:
        return any(e["event"] == "catalog.committed" and e["added"] > 0
                   for e in events(config)[start:])

    def newest_row() -> int:
        return max(sandbox.arrow("TRANSACTION_FLATTENED").column("ROWTIME").to_pylist())

    def level_past(newest: int) -> bool:
        doc = lake.document("stream", "tx")
        return doc is not None and (doc["watermark"]["rowtime_ms"] or -1) >= newest and \
            set(registered(judge.load_table(("lake", "tx")))) == lake.listed("stream", "tx")

    sandbox.generate(20)
    newest = newest_row()
    wait_for(lambda: registered_after(0), 60, "the first files registered")
    judge = reader(postgres_database)
    wait_for(lambda: level_past(newest), 60, "the catalog level with every row")
    with postgres.paused():
        paused_at = len(events(config))
        sandbox.generate(30)
        newest = newest_row()

        def exported_behind() -> bool:
            later = events(config)[paused_at:]
            doc = lake.document("stream", "tx")
            return any(e["event"] == "catalog.behind" and e["feed"] == "tx" for e in later) \
                and doc is not None and (doc["watermark"]["rowtime_ms"] or -1) >= newest

        wait_for(exported_behind, 60, "runs committing every row while the catalog hangs")
        assert behind_metric() == 1
        later = events(config)[paused_at:]
        assert any(e["event"] == "export.finished" and e["rows"] > 0 for e in later)
        assert not registered_after(paused_at)
        behind = [e for e in later if e["event"] == "catalog.behind"]
        assert "no answer within 2s" in behind[0]["error"], behind[0]
        assert all("no answer within 2s" in e["error"] or "has not ended" in e["error"]
                   for e in behind), behind
    resumed_at = len(events(config))
    sandbox.generate(10)
    newest = newest_row()
    wait_for(lambda: level_past(newest), 60, "the catalog level with the lake after SIGCONT")
    assert registered_after(resumed_at)
    wait_for(lambda: behind_metric() == 0, 30, "lakeexportd_catalog_behind back to 0")
    daemons.stop()
    table = assert_level(judge, lake, "stream", "tx")
    doc = lake.document("stream", "tx")
    assert doc is not None
    assert_rows(table, "stream", stream_truth(sandbox, "TRANSACTION_FLATTENED",
                                              doc["watermark"]["rowtime_ms"]), "TRANSACTION_ID")
