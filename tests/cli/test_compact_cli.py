"""``lakeexportd compact``: the real CLI on a lake the real exporter wrote from the sandbox,
on local disk and on moto's S3 server.

The lake is made by many small export runs (several files per day); the CLI then compacts it,
killed at each compaction failpoint and run again. Rows are read back with pyarrow from the
files ``_metadata.json`` lists and compared with the sandbox's ground truth; files on disk are
listed by the test itself.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow.compute as pc
import pytest
from lakecheck import assert_consistent, feed, read_listed
from objectlake import store_config
from objectstores import Bucket

from lakeexportd.config.model import Compaction
from lakeexportd.export.exporter import DataLakeExporter
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.lake import layout
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import StreamMetadata
from lakeexportd.lake.storage import LOCAL, Storage, open_lake
from lakeexportd.sandbox import Sandbox

SOURCE = "TRANSACTION_FLATTENED"
TX = feed("tx", SOURCE, settle_delay=0.0, compaction=Compaction(after_days=1))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=17, preload=400, preload_days=3) as sb:
        yield sb


def build(sb: Sandbox, root: Path, storage: Storage = LOCAL) -> None:
    """Export the stream in runs 4 hours apart: a few files per day."""
    times = [r["ROWTIME"] for r in sb.rows(SOURCE)]
    now = dt.datetime.fromtimestamp(min(times) / 1000, dt.UTC)
    end = dt.datetime.fromtimestamp(max(times) / 1000, dt.UTC) + dt.timedelta(seconds=1)
    client = KsqlDBClient(CurlTransport(sb.url), max_retries=1)
    try:
        ex = DataLakeExporter(client, root, lock_wait=2, storage=storage)
        while now < end:
            now = min(now + dt.timedelta(hours=4), end)
            ex.export(TX, now)
    finally:
        client.close()


def write_config(tmp_path: Path, sb: Sandbox, lake: str, storage: str = "",
                 extra_feeds: str = "") -> Path:
    config = tmp_path / "lakeexportd.yaml"
    config.write_text(
        f"ksqldb: {{url: '{sb.url}'}}\n"
        f"lake: {{root: '{lake}', orphan_grace: 1h{storage}}}\n"
        f"logging: {{dir: '{tmp_path / 'logs'}'}}\n"
        "feeds:\n"
        f"  - {{name: tx, source: {SOURCE}, kind: stream}}\n" + extra_feeds)
    return config


def cli(*args: str, failpoint: str | None = None, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "LAKEEXPORTD_FAILPOINT"}
    environ.update(env or {})
    if failpoint:
        environ["LAKEEXPORTD_FAILPOINT"] = failpoint
    return subprocess.run([sys.executable, "-m", "lakeexportd", *args], env=environ,
                          capture_output=True, text=True, timeout=180)


def state(root: Path, storage: Storage = LOCAL) -> tuple[int, Decimal, list[str], dict[str, int]]:
    """(rows, exact AMOUNT sum, sorted ids, files per day) read from the lake's files."""
    table = read_listed(root, "stream", "tx", storage)
    doc = MetadataStore(storage).load(layout.feed_dir(root, "stream", "tx"))
    assert isinstance(doc, StreamMetadata)
    ids = sorted(table.column("TRANSACTION_ID").to_pylist())
    return (table.num_rows, pc.sum(table.column("AMOUNT")).as_py(), ids,
            {p.path: len(p.files) for p in doc.partitions})


def truth(sb: Sandbox) -> tuple[int, Decimal, list[str]]:
    rows = sb.rows(SOURCE)
    return (len(rows), sum((r["AMOUNT"] for r in rows), Decimal(0)),
            sorted(r["TRANSACTION_ID"] for r in rows))


TOMORROW = (dt.date.today() + dt.timedelta(days=2)).isoformat()


def test_dry_run_changes_no_byte_then_compact_keeps_every_row(
    sandbox: Sandbox, tmp_path: Path,
) -> None:
    """--dry-run prints the plan and leaves the lake's bytes identical; the real run makes one
    file per day with the same rows, exact sum and ids; verify passes."""
    root = tmp_path / "lake"
    build(sandbox, root)
    config = write_config(tmp_path, sandbox, str(root))
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    dry = cli("compact", "-c", str(config), "--before", TOMORROW, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would compact" in dry.stdout and "--dry-run: nothing changed" in dry.stdout
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    rows, total, ids, days = state(root)
    assert (rows, total, ids) == truth(sandbox) and max(days.values()) >= 2
    done = cli("compact", "-c", str(config), "tx", "--before", TOMORROW)
    assert done.returncode == 0, done.stderr
    # A day holding one file only (the sandbox's days follow the clock) has nothing to merge.
    assert f"compacted {sum(1 for n in days.values() if n >= 2)} day" in done.stdout
    rows, total, ids, after = state(root)
    assert (rows, total, ids) == truth(sandbox)
    assert set(after.values()) == {1} and after.keys() == days.keys()
    assert cli("verify", "-c", str(config), "tx").returncode == 0


@pytest.mark.parametrize("point", ["compact.after_file", "compact.before_commit",
                                   "compact.after_commit", "compact.after_row_group"])
def test_a_kill_at_any_compaction_step_loses_and_duplicates_nothing(
    sandbox: Sandbox, tmp_path: Path, point: str,
) -> None:
    """Killed at a compaction failpoint (second day for the per-file ones), then run again:
    every row once, one file per day, nothing unlisted left; the next export runs clean."""
    root = tmp_path / "lake"
    build(sandbox, root)
    config = write_config(tmp_path, sandbox, str(root))
    nth = "" if point == "compact.after_row_group" else ":2"
    killed = cli("compact", "-c", str(config), "--before", TOMORROW, failpoint=point + nth)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    rows, total, ids, _ = state(root)
    assert (rows, total, ids) == truth(sandbox)
    again = cli("compact", "-c", str(config), "--before", TOMORROW)
    assert again.returncode == 0, again.stderr
    rows, total, ids, days = state(root)
    assert (rows, total, ids) == truth(sandbox) and set(days.values()) == {1}
    assert_consistent(root, "stream", "tx")  # the rerun removed the killed run's leftovers
    export = cli("export", "-c", str(config), "tx")  # exports go on after a compaction
    assert export.returncode == 0, export.stderr
    assert_consistent(root, "stream", "tx")
    assert (state(root)[:3]) == truth(sandbox)


def test_exit_codes(sandbox: Sandbox, tmp_path: Path) -> None:
    """Unknown feed, table feed, bad date: usage errors (2); nothing to do: 0."""
    extra = "  - {name: users, source: USERS, kind: table}\n" \
            "  - {name: raw, source: TRANSACTION_STREAM, kind: stream, compaction: null}\n"
    config = write_config(tmp_path, sandbox, str(tmp_path / "lake"), extra_feeds=extra)
    unknown = cli("compact", "-c", str(config), "nope")
    assert unknown.returncode == 2 and "unknown feed 'nope'" in unknown.stderr
    table = cli("compact", "-c", str(config), "users")
    assert table.returncode == 2 and "is a table" in table.stderr
    off = cli("compact", "-c", str(config), "raw")
    assert off.returncode == 2 and "compaction: null" in off.stderr
    bad = cli("compact", "-c", str(config), "--before", "yesterday")
    assert bad.returncode == 2 and "not a date" in bad.stderr
    empty = cli("compact", "-c", str(config))
    assert empty.returncode == 0, empty.stderr
    assert "compact tx: compacted 0 days" in empty.stdout and "raw" not in empty.stdout


def test_compaction_on_s3_keeps_rows_and_inputs_until_the_grace(
    sandbox: Sandbox, tmp_path: Path, s3_bucket: Bucket,
) -> None:
    """On moto's S3: the CLI compacts, the retired input objects are still there (grace 1h),
    rows are exact, verify passes."""
    flow, options, secret, url = store_config(s3_bucket)
    lake = open_lake(url, options)
    build(sandbox, lake.root, lake.storage)  # type: ignore[arg-type]
    config = write_config(tmp_path, sandbox, url, storage=f", storage: {flow}")
    env = {"LAKE_SECRET": secret}
    rows, total, ids, days = state(lake.root, lake.storage)  # type: ignore[arg-type]
    objects_before = {e.path for e in lake.storage.walk_files(lake.root / "streams" / "tx")}
    done = cli("compact", "-c", str(config), "--before", TOMORROW, env=env)
    assert done.returncode == 0, done.stderr
    rows, total, ids, after = state(lake.root, lake.storage)  # type: ignore[arg-type]
    assert (rows, total, ids) == truth(sandbox) and set(after.values()) == {1}
    objects_after = {e.path for e in lake.storage.walk_files(lake.root / "streams" / "tx")}
    assert {p for p in objects_before if p.suffix == ".parquet"} <= objects_after
    verify = cli("verify", "-c", str(config), "tx", env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
