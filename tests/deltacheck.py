"""A Delta feed seen without lakeexportd: rows through delta-rs's reader, files from the store.

Ground truth is the sandbox's rows, typed as DESIGN.md section 12 says a Delta table holds
them (TIMESTAMP in microseconds, TIME as an ISO string): the expected types and values are
derived here from the sandbox's Arrow table, never from ``lakeexportd.lake.delta``. The log is
read with ``deltalake.DeltaTable`` (the reader every Delta user has), ``_metadata.json`` as
plain JSON, and the files by listing the disk or the bucket (obstore), so the code under test
only ever wrote what is checked.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from lakecheck import wire_truth
from objectlake import document, objects
from objectstores import Bucket

PARTITIONS = ("year", "month", "day")


@dataclass
class Place:
    """Where a test's lake is: a local folder or a prefix ``lake`` in a test bucket."""

    root: str  # lake.root as the config names it
    lake_extra: str = ""  # more of the YAML `lake:` flow mapping
    bucket: Bucket | None = None
    options: dict[str, str] = field(default_factory=dict)  # delta-rs storage options
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "local" if self.bucket is None else self.bucket.kind

    def uri(self, kind: str, feed: str) -> str:
        return f"{self.root}/{'streams' if kind == 'stream' else 'tables'}/{feed}"

    def table(self, kind: str, feed: str) -> DeltaTable:
        return DeltaTable(self.uri(kind, feed), storage_options=self.options or None)

    def keys(self, kind: str, feed: str) -> set[str]:
        """Every Parquet data file in the feed folder (relative keys), whatever lists it."""
        if self.bucket is None:
            folder = Path(self.uri(kind, feed))
            return {p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet")
                    if not p.name.startswith(".")} if folder.exists() else set()
        return {k for k in objects(self.bucket, "lake", kind, feed) if k.endswith(".parquet")}

    def summary(self, kind: str, feed: str) -> dict[str, Any]:
        if self.bucket is None:
            path = Path(self.uri(kind, feed)) / "_metadata.json"
            doc: dict[str, Any] = json.loads(path.read_text())
            return doc
        found = document(self.bucket, "lake", kind, feed)
        assert found is not None, "no _metadata.json"
        return found


def config_text(url: str, place: Place, logs: Path, *, settle: str = "30s",
                lock_wait: str = "2s") -> str:
    return f"""
ksqldb: {{url: "{url}", max_retries: 0}}
logging: {{dir: "{logs}"}}
lake: {{root: "{place.root}"{place.lake_extra}}}
scheduler: {{lock_wait: {lock_wait}}}
defaults: {{batch_size: 400, max_rows_per_file: 180, max_open_partitions: 2, settle_delay: {settle}}}
feeds:
  - {{name: tx, source: TRANSACTION_STREAM, kind: stream, format: delta}}
  - {{name: users, source: USER_SUMMARY, kind: table, retention_versions: 2, format: delta}}
"""


# -- what a Delta table must hold ----------------------------------------------------------------

def delta_type(t: pa.DataType) -> pa.DataType:
    """The type DESIGN.md section 12 says a Delta feed stores for a ksqlDB column of type ``t``."""
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_time(t):
        return pa.string()
    if pa.types.is_list(t):
        return pa.list_(delta_type(t.value_type))
    if pa.types.is_map(t):
        return pa.map_(delta_type(t.key_type), delta_type(t.item_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, delta_type(f.type)) for f in t])
    return t


def same_type(a: pa.DataType, b: pa.DataType) -> bool:
    """Equal types, whatever names the list and map child fields carry."""
    if pa.types.is_list(a) or pa.types.is_large_list(a):
        return pa.types.is_list(b) and same_type(a.value_type, b.value_type)
    if pa.types.is_map(a):
        return (pa.types.is_map(b) and same_type(a.key_type, b.key_type)
                and same_type(a.item_type, b.item_type))
    if pa.types.is_struct(a):
        return (pa.types.is_struct(b) and [f.name for f in a] == [f.name for f in b]
                and all(same_type(x.type, y.type) for x, y in zip(a, b, strict=True)))
    return bool(a.equals(b))


def delta_value(v: Any) -> Any:
    """A value as a Delta table gives it back (a time of day as its ISO string)."""
    if isinstance(v, dt.time):
        return v.isoformat(timespec="microseconds")
    if isinstance(v, dict):
        return {k: delta_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [delta_value(x) for x in v]
    if isinstance(v, tuple):
        return tuple(delta_value(x) for x in v)
    return v


def assert_rows_exactly_once(rows: pa.Table, truth: pa.Table, key: str) -> None:
    """``rows`` (read from the Delta table) hold every row of ``truth`` once, same values,
    each column of the type a Delta table must give it."""
    ids = rows.column(key).to_pylist()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicated rows"
    assert set(ids) == set(truth.column(key).to_pylist()), (
        f"rows missing or extra: {len(set(truth.column(key).to_pylist()) - set(ids))} missing, "
        f"{len(set(ids) - set(truth.column(key).to_pylist()))} extra")
    truth = wire_truth(truth).sort_by(key)
    rows = rows.select(truth.column_names).sort_by(key)
    for name in truth.column_names:
        want = delta_type(truth.schema.field(name).type)
        got = rows.schema.field(name).type
        assert same_type(got, want), f"{name}: {got} in the table, {want} expected"
        expected = [delta_value(v) for v in truth.column(name).to_pylist()]
        assert rows.column(name).to_pylist() == expected, name


def log_files(table: DeltaTable) -> dict[str, tuple[int, int]]:
    """The current version's files: relative path -> (records, bytes), from the log."""
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    return {urllib.parse.unquote(a["path"]): (int(a["num_records"]), int(a["size_bytes"]))
            for a in actions}


def summary_files(doc: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """The files ``_metadata.json`` lists (a table: its current version's), same shape."""
    if "partitions" in doc:
        groups = doc["partitions"]
    else:
        groups = [v for v in doc["versions"] if v["version"] == doc["current_version"]]
    return {f"{g['path']}/{f['name']}": (f["records"], f["size_bytes"])
            for g in groups for f in g["files"]}


def check_feed(place: Place, kind: str, feed: str, truth: pa.Table) -> DeltaTable:
    """The whole invariant after a rerun: rows exactly once through delta-rs, the
    transaction at the summary's watermark, the summary listing the log's files, each of
    which exists; returns the table."""
    table = place.table(kind, feed)
    rows = table.to_pyarrow_table()
    if kind == "stream":
        days = [dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date()
                for ms in rows.column("ROWTIME").to_pylist()]
        assert [(d.year, d.month, d.day) for d in days] == list(zip(
            *(rows.column(p).to_pylist() for p in PARTITIONS), strict=True)), \
            "a row sits in the partition of another day"
        assert_rows_exactly_once(rows, truth, "TRANSACTION_ID")
    else:
        assert_rows_exactly_once(rows, truth.drop_columns(["ROWTIME"]), "USER_ID")
    doc = place.summary(kind, feed)
    txn = table.transaction_version(f"lakeexportd:{feed}")
    assert txn is not None, "the log carries no lakeexportd transaction"
    history = table.history()
    ours = [h for h in history if "lakeexportd.run_id" in h and h["operation"] == "WRITE"]
    newest = max(ours, key=lambda h: h["version"])
    if kind == "stream":
        assert doc["watermark"]["rowtime_ms"] == txn, (doc["watermark"], txn)
    else:
        assert doc["current_version"] == newest["version"], (doc["current_version"], newest)
        # a table's transaction is its scan start: before its commit, not long before
        assert newest["timestamp"] - 120_000 <= txn <= newest["timestamp"], (txn, newest)
    assert doc["last_status"] == "success"
    listed = log_files(table)
    summary = summary_files(doc)
    if kind == "stream":
        assert summary == listed, "_metadata.json and the log list different files"
    else:  # a table's folder number need not be its Delta version: compare names
        assert {p.rsplit("/", 1)[-1]: v for p, v in summary.items()} == \
            {p.rsplit("/", 1)[-1]: v for p, v in listed.items()}
    missing = set(listed) - place.keys(kind, feed)
    assert not missing, f"the log lists files that do not exist: {sorted(missing)[:5]}"
    return table


# -- running the CLI -----------------------------------------------------------------------------

# The CLI's imports take ~3 s a process on this machine, more than the export itself; a kill -9
# matrix of 70+ cases pays that twice per case. So each `lakeexportd export` here is a fresh
# process forked from a forkserver that imported lakeexportd once: its own pid, environment
# and output, the CLI's `main` from its argument parsing on, and SIGKILL at a failpoint ends
# it exactly as it ends `python -m lakeexportd` (nothing of the parent's state is shared: the
# server imports modules and starts no thread, no delta-rs runtime, no connection).
_FORKS = multiprocessing.get_context("forkserver")
_FORKS.set_forkserver_preload(["lakeexportd.cli.commands", "lakeexportd.export.delta_run",
                               "lakeexportd.config.load", "lakeexportd.export.exporter",
                               "lakeexportd.service.logs", "yaml", "apscheduler",
                               "deltalake", "pyarrow.parquet", "obstore", "httpx"])


@dataclass
class Cli:
    """A ``lakeexportd`` command in its own process (see above): exit code and output."""

    process: Any
    output: Path

    @property
    def pid(self) -> int:
        pid: int = self.process.pid
        return pid

    def wait(self, timeout: float = 120) -> int:
        self.process.join(timeout)
        code = self.process.exitcode
        assert code is not None, f"lakeexportd (pid {self.pid}) still runs after {timeout}s"
        return int(code)

    @property
    def stderr(self) -> str:
        return self.output.read_text(errors="replace")


def _cli_main(argv: list[str], env: dict[str, str], output: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    from lakeexportd.cli import main

    raise SystemExit(main(argv))


def start_cli(argv: list[str], output: Path, failpoint: str | None = None,
              env: dict[str, str] | None = None) -> Cli:
    """Start ``lakeexportd <argv>`` (with ``LAKEEXPORTD_FAILPOINT=failpoint``)."""
    environment = {k: v for k, v in os.environ.items() if k != "LAKEEXPORTD_FAILPOINT"}
    environment.update(env or {})
    if failpoint:
        environment["LAKEEXPORTD_FAILPOINT"] = failpoint
    process = _FORKS.Process(target=_cli_main, args=(argv, environment, str(output)))
    process.start()
    return Cli(process, output)


def run_cli(argv: list[str], output: Path, failpoint: str | None = None,
            env: dict[str, str] | None = None) -> Cli:
    cli = start_cli(argv, output, failpoint, env)
    cli.wait()
    return cli
