"""The object-store fault suite: the real ``lakeexportd export`` on S3 (moto) and Azure Blob
(Azurite), through a proxy that breaks the store's answers (``tests/faultproxy.py``).

Each case runs the CLI against the sandbox with the lake's ``endpoint`` on the proxy and small
``timeout`` / ``max_retries`` store options, checks what the run reported (exit code, message,
no secret), that the fault really fired (the proxy's counts), and what the lake holds. Then a
clean rerun (no faults) must leave every source row in the lake exactly once, with
``_metadata.json`` consistent with the objects (``tests/lakecheck.py``, not the code under
test). The faults: 5xx and throttling (S3 ``SlowDown``, Azure ``ServerBusy``, 429) in bursts
that obstore's retries absorb and in storms that outlast them, a connection cut mid-upload,
the ``_metadata.json`` commit that lands and whose answer is lost (a timeout, or a 500 that
obstore retries into its own precondition), and another writer replacing (or creating first)
``_metadata.json`` right before the commit.

Two cases run the exporter in process, where the CLI cannot reach: a block of a multipart
upload cut on Azurite (the part size is no config key), and a commit that may still land
after its run gave up (a storage double holds the PUTs, then lands one).
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import obstore
import pytest
from faultproxy import (
    AZURE_BUSY,
    AZURE_INTERNAL,
    AZURE_TOO_MANY,
    S3_INTERNAL,
    S3_SLOWDOWN,
    S3_TOO_MANY,
    Action,
    FaultProxy,
    Rule,
    error_rule,
)
from lakecheck import NOW, assert_consistent, assert_exactly_once, feed, read_listed
from objectstores import Bucket

from lakeexportd.errors import (
    EX_FAILED,
    EX_OK,
    EX_TEMPFAIL,
    CommitOutcomeUnknown,
    LakeExportError,
)
from lakeexportd.export.exporter import DataLakeExporter
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.lake.storage import Lake, ObjectStorage, Signature, open_lake
from lakeexportd.lake.storage.object import from_url
from lakeexportd.sandbox import Sandbox

STREAM, TABLE = "TRANSACTION_FLATTENED", "USER_SUMMARY"
S3_SECRET = "lakeexportd-fault-secret-5d1e"  # moto takes any secret: one easy to grep for
DATA_PUT = r"/lake/streams/tx/year(=|%3D)[^?]*\.parquet"  # a data object's upload (one PUT here)
ANSWERS = {  # store -> kind -> what the real service answers
    "s3": {"5xx": S3_INTERNAL, "throttle": S3_SLOWDOWN, "429": S3_TOO_MANY},
    "azure": {"5xx": AZURE_INTERNAL, "throttle": AZURE_BUSY, "429": AZURE_TOO_MANY},
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=41, preload=600, preload_days=3) as sb:
        yield sb


@dataclass
class Setup:
    """One lake in a fresh bucket, reached through a proxy, and the CLI to run on it."""

    kind: str
    bucket: Bucket
    proxy: FaultProxy
    config: Path
    env: dict[str, str]
    secret: str
    sandbox: Sandbox

    @property
    def lake(self) -> Lake:
        """The lake read directly from the server (not through the proxy)."""
        options = {k: str(v) for k, v in {**self.bucket.config, "allow_http": "true"}.items()}
        if self.kind == "s3":
            options["secret_access_key"] = S3_SECRET
        return open_lake(f"{self.bucket.url}/lake", options)

    def export(self, *feeds: str, retries: int = 2) -> subprocess.CompletedProcess[str]:
        text = re.sub(r"max_retries: \d+", f"max_retries: {retries}", self.config.read_text())
        self.config.write_text(text)
        done = subprocess.run(
            [sys.executable, "-m", "lakeexportd", "export", "-c", str(self.config), *feeds],
            env=self.env, capture_output=True, text=True, timeout=120,
        )
        assert self.secret not in done.stdout + done.stderr
        return done

    def key(self, feed_path: str) -> str:
        return f"lake/{feed_path}/_metadata.json"

    def check(self, *, table: bool = False) -> None:
        """Every source row once, and metadata consistent with the objects."""
        lake = self.lake
        root = Path(lake.root)
        rows = read_listed(root, "stream", "tx", lake.storage)
        assert_exactly_once(rows, self.sandbox.arrow(STREAM))
        assert_consistent(root, "stream", "tx", lake.storage)
        if table:
            truth = self.sandbox.arrow(TABLE).drop_columns(["ROWTIME"])
            got = read_listed(root, "table", "users", lake.storage)
            assert got.sort_by("USER_ID").select(truth.column_names).to_pylist() == \
                truth.sort_by("USER_ID").to_pylist()
            assert_consistent(root, "table", "users", lake.storage)

    def rerun_clean(self, *, table: bool = False) -> subprocess.CompletedProcess[str]:
        self.proxy.clear()
        done = self.export("tx", *(["users"] if table else []))
        assert done.returncode == EX_OK, done.stderr
        self.check(table=table)
        return done


@pytest.fixture(params=["s3", "azure"])
def setup(request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path) -> Iterator[Setup]:
    kind = request.param
    bucket: Bucket = request.getfixturevalue("s3_bucket" if kind == "s3" else "azure_container")
    upstream = str(bucket.config["endpoint"])
    with FaultProxy(upstream) as proxy:
        if kind == "s3":
            secret, secret_key = S3_SECRET, "secret_access_key"
            plain = {"region": bucket.config["region"], "access_key_id_env": "LAKE_KEY_ID"}
        else:
            secret, secret_key = str(bucket.config["account_key"]), "account_key"
            plain = {"account_name": bucket.config["account_name"]}
        options = ", ".join(f"{k}: '{v}'" for k, v in plain.items())
        config = tmp_path / "lakeexportd.yaml"
        config.write_text(
            f"ksqldb: {{url: '{sandbox.url}', max_retries: 1}}\n"
            f"lake:\n  root: {bucket.url}/lake\n"
            f"  storage: {{endpoint: '{proxy.endpoint}', {options}, allow_http: true, "
            f"timeout: 2s, max_retries: 2, retry_timeout: 20s, {secret_key}_env: LAKE_SECRET}}\n"
            f"logging: {{dir: '{tmp_path / 'logs'}'}}\n"
            "defaults: {max_rows_per_file: 150, max_open_partitions: 2}\n"
            "feeds:\n"
            "  - {name: tx, source: TRANSACTION_FLATTENED, kind: stream}\n"
            "  - {name: users, source: USER_SUMMARY, kind: table}\n"
        )
        env = {**os.environ, "LAKE_SECRET": secret,
               "LAKE_KEY_ID": str(bucket.config.get("access_key_id", ""))}
        yield Setup(kind, bucket, proxy, config, env, secret, sandbox)


def failure(done: subprocess.CompletedProcess[str], feed: str) -> str:
    """The CLI's report of ``feed``'s failure (the store's own error text may span lines)."""
    start = done.stderr.index(f"export {feed}: failed: ")
    return done.stderr[start:]


def data_objects(bucket: Bucket) -> list[str]:
    """The stream feed's data objects on the server (read directly, not through the proxy)."""
    return [str(meta["path"]) for meta in obstore.list(bucket.store, "lake/streams/tx")
            .collect() if str(meta["path"]).endswith(".parquet")]


def test_bursts_of_5xx_throttling_and_a_cut_on_data_uploads_are_absorbed(setup: Setup) -> None:
    """A 500, a 503 (SlowDown / ServerBusy), a 429 and a connection cut after 200 bytes, on
    four data uploads: obstore's retries absorb them, nothing half-written appears, the run
    succeeds with every row once, and the rerun exports nothing again."""
    answers = ANSWERS[setup.kind]
    rules = setup.proxy.add(
        error_rule("PUT", DATA_PUT, answers["5xx"]),
        error_rule("PUT", DATA_PUT, answers["throttle"], skip=1),
        error_rule("PUT", DATA_PUT, answers["429"], skip=2),
        Rule("PUT", DATA_PUT, "cut", after_bytes=200, skip=3),
    )
    done = setup.export("tx")
    assert done.returncode == EX_OK, done.stderr
    assert [r.fired for r in rules] == [1, 1, 1, 1]
    assert len(data_objects(setup.bucket)) >= 4  # several data files, the faulted ones included
    setup.check()
    again = setup.rerun_clean()
    assert "export tx: 0 rows" in again.stdout, again.stdout


@pytest.mark.parametrize(("setup", "fault"), [("s3", "throttle"), ("azure", "5xx")],
                         indirect=["setup"])
def test_a_storm_longer_than_the_retries_fails_the_run_naming_feed_and_store(
    setup: Setup, fault: str,
) -> None:
    """Every data upload answered with the store's error (the bursts test covers every kind
    on both stores; a storm fails alike whatever the kind): the run fails (exit 75: try again
    later, the store is not broken), names the
    feed and the object's URL, publishes nothing and leaves no data object; a clean rerun
    then exports every row once."""
    rule, = setup.proxy.add(error_rule("PUT", DATA_PUT, ANSWERS[setup.kind][fault], times=None))
    done = setup.export("tx")
    assert done.returncode == EX_TEMPFAIL, done.stderr
    assert rule.fired == 3  # the first attempt and max_retries: 2
    line = failure(done, "tx")
    assert f"cannot finish {setup.bucket.url}/lake/streams/tx/year=" in line
    assert "nothing of this run is published" in line and "next run" in line
    assert data_objects(setup.bucket) == []
    assert_consistent(Path(setup.lake.root), "stream", "tx", setup.lake.storage)
    setup.rerun_clean()


def test_a_commit_whose_answer_is_lost_after_it_landed_is_a_success(setup: Setup) -> None:
    """The final commit PUT of ``_metadata.json`` lands, then its answer is lost: held past
    the client's timeout, or replaced by a 500 (which obstore retries into a precondition
    failure against its own write when retries are on). Each run reads the document back and
    reports success; nothing is exported twice. Both losses hit a stream and a table feed,
    with and without client retries."""
    status, body, headers = ANSWERS[setup.kind]["5xx"]

    def lose(feed: str, action: Action, skip: int) -> Rule:
        return Rule("PUT", re.escape(f"/lake/{feed}/_metadata.json"), action, skip=skip,
                    status=status, body=body,
                    headers={"Content-Type": "application/xml", **headers})

    rows = setup.sandbox.arrow(STREAM).num_rows
    # First run (skip the first-run empty commits), retries on: obstore does not retry the
    # timed-out PUT, and retries the 500 into its own If-Match / If-None-Match refusal.
    rules = setup.proxy.add(lose("streams/tx", "lose_answer", 1),
                            lose("tables/users", "land_then_answer", 1))
    done = setup.export("tx", "users", retries=2)
    assert done.returncode == EX_OK, done.stderr
    assert [r.fired for r in rules] == [1, 1]
    assert done.stderr.count("metadata.commit_settled") == 2, done.stderr
    assert f"export tx: {rows:,} rows" in done.stdout, done.stdout
    setup.check(table=True)
    # Second run, no retries, the losses swapped: the 500 is the client's final answer.
    setup.proxy.clear()
    rules = setup.proxy.add(lose("streams/tx", "land_then_answer", 0),
                            lose("tables/users", "lose_answer", 0))
    done = setup.export("tx", "users", retries=0)
    assert done.returncode == EX_OK, done.stderr
    assert [r.fired for r in rules] == [1, 1]
    assert done.stderr.count("metadata.commit_settled") == 2, done.stderr
    assert "export tx: 0 rows" in done.stdout and "version v2 current" in done.stdout
    again = setup.rerun_clean(table=True)
    assert "export tx: 0 rows" in again.stdout, again.stdout  # nothing exported twice


@pytest.mark.parametrize("setup", ["azure"], indirect=True)  # the logic is the store's own
def test_a_lost_commit_answer_with_the_store_unreadable_keeps_the_landed_commit(
    setup: Setup,
) -> None:
    """The final commit lands, its answer is lost, and from then on the store answers every
    read of ``_metadata.json`` with 503: the run cannot tell, fails saying the outcome is
    unknown, and must not delete the files its landed commit lists. The lake is consistent
    before the rerun, which then exports nothing again. (Azure only: the settling is the
    metadata store's, above obstore; the in-process test below covers reads that work.)"""
    key = setup.key("streams/tx")
    reads_fail = [error_rule(method, re.escape(f"/{key}"), ANSWERS[setup.kind]["throttle"],
                             times=None) for method in ("HEAD", "GET")]
    lost, = setup.proxy.add(Rule("PUT", re.escape(f"/{key}"), "lose_answer", skip=1,
                                 hook=lambda: setup.proxy.add(*reads_fail)))
    done = setup.export("tx", retries=0)
    assert done.returncode == EX_TEMPFAIL, done.stderr  # the store did not answer: try again
    assert lost.fired == 1 and reads_fail[0].fired >= 1
    assert "whether it landed is unknown" in failure(done, "tx")
    setup.proxy.clear()
    setup.check()  # the landed commit and every file it lists are there, nothing else
    again = setup.rerun_clean()
    assert "export tx: 0 rows" in again.stdout, again.stdout


def _other_writer(setup: Setup, key: str, *, create: bool) -> None:
    """Another writer: replaces the document at ``key`` on the server, or creates it first."""
    store = setup.bucket.store
    if create:
        document = {  # a first run's empty document, as another lakeexportd would write it
            "format_version": 1, "feed": "tx", "source": STREAM, "kind": "stream",
            "mode": "append", "last_export": None, "last_status": None, "schema": [],
            "schema_history": [], "total_records": 0, "total_size_bytes": 0,
            "total_size_mb": 0.0, "exports": [], "watermark": {"rowtime_ms": None},
            "partitions": [], "written_by": "another writer",
        }
        obstore.put(store, key, json.dumps(document).encode(), mode="create")
        return
    document = json.loads(bytes(obstore.get(store, key).bytes()))
    document["written_by"] = "another writer"
    obstore.put(store, key, json.dumps(document).encode())


@pytest.mark.parametrize("which", ["update", "first_create"])
def test_another_writer_before_the_commit_fails_the_run_and_publishes_nothing(
    setup: Setup, which: str,
) -> None:
    """Right before the run's commit PUT, another writer replaces ``_metadata.json`` (or, on
    the first run, creates it first): the run fails saying another writer changed the feed,
    its data is not listed and none of its data objects is left; a clean rerun exports every
    row once."""
    key = setup.key("streams/tx")
    rule, = setup.proxy.add(Rule(
        "PUT", re.escape(f"/{key}"), "hook", skip=0 if which == "first_create" else 1,
        hook=lambda: _other_writer(setup, key, create=which == "first_create"),
    ))
    done = setup.export("tx")
    assert done.returncode == EX_FAILED, done.stderr
    assert rule.fired == 1
    line = failure(done, "tx")
    assert "another writer changed the feed" in line and "nothing of this run was published" \
        in line and f"{setup.bucket.url}/{key}" in line
    document = json.loads(bytes(obstore.get(setup.bucket.store, key).bytes()))
    assert document["written_by"] == "another writer"
    assert document["partitions"] == [] and document["total_records"] == 0
    assert data_objects(setup.bucket) == []
    setup.rerun_clean()


class HeldCommits(ObjectStorage):
    """obstore's memory store whose ``_metadata.json`` PUTs, once ``hold`` is set, never answer
    and stay in flight (``held``): each may still land whenever the test says."""

    def __init__(self, base: ObjectStorage) -> None:
        super().__init__(base.store, url=base.url, root=base.root)
        self.hold = False
        self.held: list[tuple[PurePath, bytes, dict[str, Any]]] = []

    def publish(self, path: PurePath, data: bytes, **kwargs: Any) -> Signature:
        if self.hold and path.name == "_metadata.json":
            self.held.append((path, data, kwargs))
            raise OSError(errno.EIO, "operation timed out", self.show(path))
        return super().publish(path, data, **kwargs)

    def land(self, index: int) -> Signature:
        path, data, kwargs = self.held[index]
        return super().publish(path, data, **kwargs)


def test_a_commit_that_may_still_land_keeps_the_runs_files(sandbox: Sandbox) -> None:
    """Both the commit and its second publish time out while reads work: the outcome is
    unknown (either PUT may land late), so the run keeps its data files. When the first PUT
    then lands, the lake is whole and consistent, and the next run exports nothing again.
    (Had the run removed its files, the late commit would list missing ones.)"""
    base = open_lake("memory:///lake")
    assert isinstance(base.storage, ObjectStorage)
    storage = HeldCommits(base.storage)
    root = Path(base.root)
    client = KsqlDBClient(CurlTransport(sandbox.url), backoff_base=0.01, max_retries=2)
    try:
        exporter = DataLakeExporter(client, root, lock_wait=2, storage=storage)
        tx = feed("tx", STREAM, max_rows_per_file=150, max_open_partitions=2)
        first = exporter.export(tx, dt.datetime(2020, 1, 1, tzinfo=dt.UTC))  # before every row
        assert first.rows == 0
        storage.hold = True
        with pytest.raises(CommitOutcomeUnknown, match="a lost request may still land"):
            exporter.export(tx, NOW)
        assert len(storage.held) >= 2  # the commit, its second publish (and the failure note)
        storage.hold = False
        storage.land(0)  # the run's first commit PUT lands late
        assert_exactly_once(read_listed(root, "stream", "tx", storage), sandbox.arrow(STREAM))
        assert_consistent(root, "stream", "tx", storage)
        assert exporter.export(tx, NOW + dt.timedelta(minutes=1)).rows == 0
    finally:
        client.close()


def test_a_multipart_block_cut_on_azure_is_retried_and_a_cut_storm_fails_cleanly(
    sandbox: Sandbox, azure_container: Bucket,
) -> None:
    """Data objects uploaded in 8 KiB blocks (``part_size`` is not a config key; the default
    8 MiB would need files of 8 MiB, and moto refuses S3 parts under 5 MiB): every block
    upload cut mid-body fails the run with no data object visible; a single cut block is
    sent again and the run succeeds with every row once."""
    with FaultProxy(str(azure_container.config["endpoint"])) as proxy:
        options = {k: str(v) for k, v in azure_container.config.items()}
        options.update(endpoint=proxy.endpoint, allow_http="true", timeout="2s",
                       max_retries="1")
        storage = from_url(f"{azure_container.url}/lake", options, part_size=8192)
        root = Path(storage.root)
        block = r"/lake/streams/tx/year(=|%3D)[^?]*\.parquet\?.*comp=block(&|$)"
        client = KsqlDBClient(CurlTransport(sandbox.url), backoff_base=0.01, max_retries=2)
        try:
            exporter = DataLakeExporter(client, root, lock_wait=2, storage=storage)
            tx = feed("tx", STREAM, max_open_partitions=2)
            storm, = proxy.add(Rule("PUT", block, "cut", after_bytes=1000, times=None))
            with pytest.raises(LakeExportError) as failed:
                exporter.export(tx, NOW)
            assert f"{azure_container.url}/lake/streams/tx/year=" in str(failed.value)
            assert "next run writes these rows again" in str(failed.value)
            assert storm.fired >= 2  # the first attempt and its retry
            assert data_objects(azure_container) == []
            proxy.clear()
            cut, = proxy.add(Rule("PUT", block, "cut", after_bytes=1000, skip=2))
            result = exporter.export(tx, NOW)
            assert cut.fired == 1 and result.rows == sandbox.arrow(STREAM).num_rows
            assert list(proxy.requests("PUT", r"comp=blocklist"))  # multipart, completed
            assert_exactly_once(read_listed(root, "stream", "tx", storage), sandbox.arrow(STREAM))
            assert_consistent(root, "stream", "tx", storage)
        finally:
            client.close()
