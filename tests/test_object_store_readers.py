"""Real readers on lakes in object stores, through the README's own snippets ("Reading the lake"
→ "On an object store"): Polars, pandas/pyarrow and DuckDB read what ``lakeexportd files --json``
lists, on S3 (moto's server) and Azure Blob (Azurite), and what they return is checked against
the sandbox's rows: the ground truth never comes from lakeexportd's own code.

Each lake is exported by the real CLI (two runs with a column added between them, so the table
has two versions) and then gets what a globbing reader would wrongly read: an uncommitted copy
of a stream file under a new name and a half-written ``version=v3/`` of the table. The snippets
run as written; only ``"lakeexportd.yaml"`` is pointed at the test's config, and ``lakeexportd``
on the PATH is this checkout's CLI. The DuckDB blocks run in ``.venv-duckdb`` (DuckDB 1.5.5 with
the ``httpfs`` and ``azure`` extensions from pip; none is built for the main venv's DuckDB 2.0).
The Spark block is documented only: the S3A and ABFS jars cannot be fetched here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import obstore
import pyarrow as pa
import pytest
from lakecheck import StreamTruth, exporter, wire_truth
from objectstores import Azurite, Bucket, MotoS3, azure_container_on, s3_bucket_on

from lakeexportd.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DUCKDB_PYTHON = ROOT / ".venv-duckdb" / "bin" / "python"
BLOCKS = ("files", "polars_s3", "polars_azure", "pandas_s3", "pandas_azure", "duckdb_s3",
          "duckdb_azure", "spark")
# The sandbox's clock: its preloaded days cross a year and a month boundary (month=01, day=01).
CLOCK = dt.datetime(2026, 1, 2, 12, tzinfo=dt.UTC).timestamp()
PREFIX = "lake"  # lake.root is <bucket URL>/lake


def snippet(name: str) -> str:
    """One Python block of the README's object-store subsection (they come in BLOCKS order)."""
    section = README.read_text().split("## Reading the lake", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### On an object store", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == len(BLOCKS), f"expected one block per name {BLOCKS}"
    return dict(zip(BLOCKS, blocks))[name]


@dataclass
class StoreLake:
    """One exported lake in a bucket or container, with the environment its readers get."""

    kind: str  # "s3" or "azure"
    bucket: Bucket
    config: Path
    env: dict[str, str]  # the credentials and endpoint, by the names the README uses


@dataclass
class Lakes(StreamTruth):
    s3: StoreLake
    azure: StoreLake
    truth: pa.Table  # the stream's rows, as the wire carries them
    users: pa.Table  # the table's rows now (its current version)
    bin_dir: Path  # holds a ``lakeexportd`` that runs this checkout's CLI

    def user_counts(self) -> dict[str, int]:
        return dict(zip(self.users.column("USER_ID").to_pylist(),
                        self.users.column("TRANSACTION_COUNT").to_pylist()))


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "lakeexportd", *args], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def _store_lake(kind: str, bucket: Bucket, sandbox: Sandbox, workdir: Path) -> StoreLake:
    workdir.mkdir(parents=True)
    endpoint = bucket.config["endpoint"]
    if kind == "s3":
        storage = (f"endpoint: '{endpoint}', region: '{bucket.config['region']}', "
                   "access_key_id_env: AWS_ACCESS_KEY_ID, "
                   "secret_access_key_env: AWS_SECRET_ACCESS_KEY")
        env = {"AWS_ACCESS_KEY_ID": str(bucket.config["access_key_id"]),
               "AWS_SECRET_ACCESS_KEY": str(bucket.config["secret_access_key"]),
               "AWS_REGION": str(bucket.config["region"]), "AWS_ENDPOINT_URL": endpoint}
    else:
        storage = (f"endpoint: '{endpoint}', account_name: '{bucket.config['account_name']}', "
                   "account_key_env: AZURE_STORAGE_ACCOUNT_KEY")
        env = {"AZURE_STORAGE_ACCOUNT_NAME": str(bucket.config["account_name"]),
               "AZURE_STORAGE_ACCOUNT_KEY": str(bucket.config["account_key"]),
               "AZURE_STORAGE_ENDPOINT": endpoint}
    config = workdir / "lakeexportd.yaml"
    config.write_text(
        f"ksqldb: {{url: '{sandbox.url}', max_retries: 1}}\n"
        f"lake:\n  root: {bucket.url}/{PREFIX}\n  storage: {{{storage}, allow_http: true}}\n"
        f"logging: {{dir: '{workdir / 'logs'}'}}\n"
        "feeds:\n"
        "  - {name: transaction_stream, source: TRANSACTION_STREAM, kind: stream, "
        "settle_delay: 0s}\n"
        "  - {name: user_summary, source: USER_SUMMARY, kind: table}\n"
    )
    return StoreLake(kind, bucket, config, env)


def _export(lake: StoreLake) -> None:
    _cli({**os.environ, **lake.env}, "export", "-c", str(lake.config), "--all")


def _watermark(lake: StoreLake) -> int:
    key = f"{PREFIX}/streams/transaction_stream/_metadata.json"
    doc = json.loads(bytes(obstore.get(lake.bucket.store, key).bytes()))
    return int(doc["watermark"]["rowtime_ms"])


def _plant_what_a_glob_would_read(lake: StoreLake) -> list[str]:
    """An uncommitted copy of a stream file (an upload whose run has not committed) and a
    half-written next table version: both under names a globbing reader picks up."""
    store = lake.bucket.store
    keys = [m["path"] for batch in obstore.list(store, prefix=PREFIX) for m in batch]
    stream_file = next(k for k in keys if "/streams/transaction_stream/year=" in k)
    table_file = next(k for k in keys if "/tables/user_summary/version=v2/" in k)
    planted = [
        stream_file.rsplit("/", 1)[0] + "/data_20991231_235959_part0001.parquet",
        table_file.replace("/version=v2/", "/version=v3/"),
    ]
    for source, target in zip((stream_file, table_file), planted):
        obstore.put(store, target, bytes(obstore.get(store, source).bytes()))
    return planted


@pytest.fixture(scope="module")
def lakes(moto_s3: MotoS3, azurite: Azurite,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lakes]:
    """The same stream (every ksqlDB type, a column added between two runs) and table (two
    versions) exported by the real CLI into a moto bucket and an Azurite container."""
    workdir = tmp_path_factory.mktemp("object-store-readers")
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "lakeexportd"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m lakeexportd "$@"\n')
    shim.chmod(0o755)
    with Sandbox.start(seed=9, preload=1500, preload_days=4, clock=lambda: CLOCK) as sb:
        s3 = _store_lake("s3", s3_bucket_on(moto_s3), sb, workdir / "s3")
        azure = _store_lake("azure", azure_container_on(azurite), sb, workdir / "azure")
        for lake in (s3, azure):
            _export(lake)
        exporter(sb.url, workdir / "unused").client.ksql(
            "ALTER STREAM TRANSACTION_STREAM ADD COLUMN NOTE STRING;")
        # New rows after both watermarks (the export's clock is the real one, not the sandbox's).
        after = max(_watermark(s3), _watermark(azure))
        sb.generate(40, (after + 1, after + 50))
        while time.time() * 1000 <= after + 50:  # the next window must include them
            time.sleep(0.01)
        for lake in (s3, azure):
            _export(lake)
            assert len(_plant_what_a_glob_would_read(lake)) == 2
        truth = wire_truth(sb.arrow("TRANSACTION_STREAM", changed={"NOTE": pa.string()}))
        yield Lakes(s3, azure, truth, sb.arrow("USER_SUMMARY"), bin_dir)


def _in_process(lakes: Lakes, lake: StoreLake, block: str,
                monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run the files block, then ``block``, as written, with the store's environment."""
    for name, value in lake.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", f"{lakes.bin_dir}{os.pathsep}{os.environ['PATH']}")
    namespace: dict[str, Any] = {}
    for name in ("files", block):
        code = snippet(name).replace('"lakeexportd.yaml"', repr(str(lake.config)))
        exec(compile(code, "README.md", "exec"), namespace)
    return namespace


# What the DuckDB process hands back: plain Python values (ints, Decimals, strings) only; a
# table row's USER_ID and TRANSACTION_COUNT (its TIMESTAMPs carry pytz zones, not in this venv).
_DUCKDB_RESULT = """
import pickle, sys
sys.stdout.buffer.write(pickle.dumps({"daily": daily, "users": [row[:2] for row in users],
                                      "duckdb": duckdb.__version__}))
"""


def _in_duckdb_venv(lakes: Lakes, lake: StoreLake, block: str) -> dict[str, Any]:
    """Run the files block and ``block`` as written in .venv-duckdb, a process of its own."""
    if not DUCKDB_PYTHON.exists():
        pytest.fail(f"{DUCKDB_PYTHON} is missing: run `make install` (it builds .venv-duckdb "
                    "from requirements/duckdb-readers.lock)", pytrace=False)
    code = "\n".join(snippet(name) for name in ("files", block)) + _DUCKDB_RESULT
    code = code.replace('"lakeexportd.yaml"', repr(str(lake.config)))
    env = {**os.environ, **lake.env, "PATH": f"{lakes.bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([str(DUCKDB_PYTHON), "-c", code], env=env, capture_output=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    result: dict[str, Any] = pickle.loads(done.stdout)
    return result


def _lake(lakes: Lakes, kind: str) -> StoreLake:
    return lakes.s3 if kind == "s3" else lakes.azure


def test_readme_has_each_object_store_block_using_its_reader() -> None:
    """One block per reader and store; each reads the files `lakeexportd files` lists."""
    assert "lakeexportd\", \"files\"" in snippet("files") and "--json" in snippet("files")
    for name, library in (("polars", "polars"), ("pandas", "pyarrow.fs"),
                          ("duckdb", "duckdb")):
        for store in ("s3", "azure"):
            code = snippet(f"{name}_{store}")
            assert f"import {library}" in code and "transaction_files" in code, name
            assert "user_files" in code and "glob" not in code.replace(".glob(", ""), name
    assert "s3a://" in snippet("spark") and "abfss://" in snippet("spark")
    for name in BLOCKS:  # no literal key: credentials come from the environment
        assert "testing" not in snippet(name) and "Eby8vdM0" not in snippet(name)


def test_the_lakes_hold_what_a_globbing_reader_would_wrongly_read(lakes: Lakes) -> None:
    """Each store has an uncommitted stream file and a version=v3 beside the current v2, so a
    reader that globbed would count rows twice: the snippets' right answers mean something."""
    for lake in (lakes.s3, lakes.azure):
        keys = [m["path"] for batch in obstore.list(lake.bucket.store, prefix=PREFIX)
                for m in batch]
        assert any(k.endswith("/data_20991231_235959_part0001.parquet") for k in keys)
        assert any("/tables/user_summary/version=v3/" in k for k in keys)
        listed = _cli({**os.environ, **lake.env}, "files", "-c", str(lake.config),
                      "user_summary")
        assert "/version=v2/" in listed and "/version=v3/" not in listed


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_polars_reads_the_committed_stream_and_current_table(
    kind: str, lakes: Lakes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Polars' scan_parquet on the listed URLs: every row once with every value and type pyarrow
    reads from the sandbox, the added column, integer partitions, the current table only."""
    ns = _in_process(lakes, _lake(lakes, kind), f"polars_{kind}", monkeypatch)
    transactions = ns["transactions"].sort("TRANSACTION_ID")
    assert [str(transactions.schema[c]) for c in ("year", "month", "day")] == ["Int16", "Int8", "Int8"]
    assert sorted(set(transactions.select("year", "month", "day").rows())) == lakes.days()
    assert str(transactions.schema["AMOUNT"]) == "Decimal(precision=10, scale=2)"
    read = transactions.to_arrow()
    assert read.num_rows == lakes.truth.num_rows
    for field in lakes.truth.schema:
        assert read.column(field.name).cast(field.type).to_pylist() == lakes.by_id(field.name), field.name
    users = ns["users"]
    assert dict(zip(users["USER_ID"].to_list(), users["TRANSACTION_COUNT"].to_list())) == lakes.user_counts()
    assert users.height == lakes.users.num_rows


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_pandas_reads_the_committed_stream_and_current_table(
    kind: str, lakes: Lakes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pandas through pyarrow's S3FileSystem / AzureFileSystem: every row once, the added column,
    int8 partitions, exact DECIMAL sums, TIME values, the current table only."""
    ns = _in_process(lakes, _lake(lakes, kind), f"pandas_{kind}", monkeypatch)
    transactions = ns["transactions"].sort_values("TRANSACTION_ID")
    assert len(transactions) == lakes.truth.num_rows
    assert transactions["TRANSACTION_ID"].to_list() == lakes.by_id("TRANSACTION_ID")
    assert "NOTE" in transactions.columns and str(transactions["month"].dtype) == "int8"
    assert sorted(set(zip(transactions["year"], transactions["month"], transactions["day"]))) == lakes.days()
    assert transactions["AMOUNT"].to_list() == lakes.by_id("AMOUNT")
    assert all(isinstance(v, Decimal) for v in transactions["AMOUNT"])
    assert transactions["LOCAL_TIME"].to_list() == lakes.by_id("LOCAL_TIME")
    # The added column: a string in the new rows, missing (NaN in pandas) in the older files.
    assert [v if isinstance(v, str) else None for v in transactions["NOTE"]] == lakes.by_id("NOTE")
    users = ns["users"]
    assert dict(zip(users["USER_ID"], users["TRANSACTION_COUNT"])) == lakes.user_counts()
    assert len(users) == lakes.users.num_rows


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_duckdb_reads_the_committed_stream_and_current_table(kind: str, lakes: Lakes) -> None:
    """DuckDB (httpfs / azure extension, .venv-duckdb) sums the listed files by integer day with
    exact DECIMALs and reads the current table version only."""
    result = _in_duckdb_venv(lakes, _lake(lakes, kind), f"duckdb_{kind}")
    assert result["duckdb"] == "1.5.5"
    daily = result["daily"]
    assert [tuple(row[:3]) for row in daily] == lakes.days()
    assert all(type(v) is int for row in daily for v in row[:3])
    assert {(2025, 12), (2026, 1)} <= {(year, month) for year, month, _ in lakes.days()}
    expected: dict[tuple[int, int, int], list[Any]] = {}
    for ms, amount in zip(lakes.truth.column("ROWTIME").to_pylist(),
                          lakes.truth.column("AMOUNT").to_pylist()):
        day = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date()
        count_sum = expected.setdefault((day.year, day.month, day.day), [0, Decimal(0)])
        count_sum[0] += 1
        count_sum[1] += amount
    assert [[row[3], row[4]] for row in daily] == [expected[day] for day in lakes.days()]
    assert all(isinstance(row[4], Decimal) for row in daily)
    users = {row[0]: row[1] for row in result["users"]}
    assert len(result["users"]) == lakes.users.num_rows and users == lakes.user_counts()
