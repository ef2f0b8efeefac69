"""Real Iceberg readers on a catalogued lake, through the README's own snippets ("Data
catalogue" → "Reading"): PyIceberg (Arrow and pandas), Polars and DuckDB (its ``iceberg``
extension from pip, in ``.venv-duckdb``) read the feeds by name, now and in the past, and what
they return is compared with the rows the sandbox served: never with lakeexportd's own code.

The lake: the README's own config (its ``catalog:`` block on a SQLite file here, its feeds with
no settle delay) exported twice by the real ``lakeexportd export``: a stream with every ksqlDB
type (nested, DECIMAL, TIMESTAMP, TIME, BYTES), whose second run adds rows generated after the
first, and a table whose rows changed in between, so its version 1 is the first run. The
snippets run as written; only the catalog's path and the time-travel moment ``as_of`` (the
wall clock between the two runs, read by this test) are substituted. The Spark and Trino
blocks are documented only (their jars and servers cannot be downloaded here): the test
checks that they compile or parse and name the catalog the way the catalog's database does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from lakecheck import StreamTruth, wire_truth

from lakeexportd.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DUCKDB_PYTHON = ROOT / ".venv-duckdb" / "bin" / "python"
READERS = ("pyiceberg", "polars", "duckdb", "spark")
CATALOG_DB = "/var/lib/lakeexportd/catalog.db"  # the path the README's blocks use
AS_OF = "2026-12-06T21:58:00+00:00"  # the moment the README's blocks time-travel to
CLOCK = dt.datetime(2026, 1, 2, 12, tzinfo=dt.UTC).timestamp()
PLANNER = "POLARS_ICEBERG_PLANNER"
ONE_DAY = (2026, 1, 2)  # the day the PyIceberg block filters on (the sandbox's last preloaded)
_DUCKDB_RESULT = """
import json as _json
print(_json.dumps({"daily": daily, "users_then": users_then}, default=str))
"""


def _section() -> str:
    return README.read_text().split("## Data catalogue", 1)[1].split("\n## ", 1)[0]


def _reading() -> str:
    return _section().split("### Reading", 1)[1].split("\n### ", 1)[0]


def snippet(reader: str) -> str:
    """One Python block of the catalogue's "Reading" subsection (in READERS order)."""
    blocks: list[str] = re.findall(r"```python\n(.*?)```", _reading(), re.S)
    assert len(blocks) == len(READERS), f"expected one block per reader {READERS}"
    return dict(zip(READERS, blocks))[reader]


def readme_config() -> dict[str, Any]:
    """The section's YAML block: the ``catalog:``, defaults and feeds a user copies."""
    blocks = re.findall(r"```yaml\n(.*?)```", _section(), re.S)
    assert len(blocks) == 1
    config = yaml.safe_load(blocks[0])
    assert isinstance(config, dict)
    return config


def _counts(table: pa.Table) -> dict[str, int]:
    return dict(zip(table.column("USER_ID").to_pylist(),
                    table.column("TRANSACTION_COUNT").to_pylist()))


@dataclass
class Catalogued(StreamTruth):
    """The exported lake, its catalog, and what the sandbox served (the ground truth)."""

    catalog_db: Path
    as_of: dt.datetime  # between the two runs
    config: dict[str, Any]  # what the test gave `lakeexportd export`
    truth: pa.Table  # the stream's rows now, as the wire carries them
    users_first: dict[str, int]  # USER_SUMMARY at run 1: USER_ID -> TRANSACTION_COUNT
    users: dict[str, int]  # USER_SUMMARY now

    def code(self, reader: str) -> str:
        code = snippet(reader)
        assert CATALOG_DB in code, f"the {reader} block names no catalog path to substitute"
        code = code.replace(CATALOG_DB, str(self.catalog_db))
        return code.replace(AS_OF, self.as_of.isoformat())

    def run(self, reader: str) -> dict[str, Any]:
        namespace: dict[str, Any] = {}
        exec(compile(self.code(reader), "README.md", "exec"), namespace)
        return namespace

    def ids(self) -> list[str]:
        return sorted(self.truth.column("TRANSACTION_ID").to_pylist())

    def daily(self) -> dict[tuple[int, int, int], tuple[int, Decimal]]:
        """(year, month, day) in UTC of each row's ROWTIME (the event time) -> rows, exact
        AMOUNT sum."""
        out: dict[tuple[int, int, int], tuple[int, Decimal]] = {}
        for row in self.truth.select(["ROWTIME", "AMOUNT"]).to_pylist():
            day = dt.datetime.fromtimestamp(row["ROWTIME"] / 1000, dt.UTC)
            key = (day.year, day.month, day.day)
            count, amount = out.get(key, (0, Decimal(0)))
            out[key] = (count + 1, amount + row["AMOUNT"])
        return out

    def day_of(self) -> dict[str, tuple[int, int, int]]:
        """TRANSACTION_ID -> the UTC day of its ROWTIME."""
        days = {}
        for row in self.truth.select(["TRANSACTION_ID", "ROWTIME"]).to_pylist():
            moment = dt.datetime.fromtimestamp(row["ROWTIME"] / 1000, dt.UTC)
            days[row["TRANSACTION_ID"]] = (moment.year, moment.month, moment.day)
        return days


def _export(config: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "lakeexportd", "export", "-c", str(config),
                           "--all"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, (done.stdout, done.stderr)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalogued]:
    work = tmp_path_factory.mktemp("catalog-lake")
    catalog_db = work / "catalog.db"
    with Sandbox.start(seed=9, preload=800, preload_days=4, clock=lambda: CLOCK) as sb:
        config = readme_config()
        config["ksqldb"] = {"url": sb.url, "max_retries": 1}
        config["lake"] = {"root": str(work / "data_lake")}
        config["logging"] = {"dir": str(work / "logs")}
        config["catalog"]["uri"] = f"sqlite:///{catalog_db}"
        for feed in config["feeds"]:  # the stream's rows are all in its first window
            if feed["kind"] == "stream":
                feed["settle_delay"] = "0s"
        path = work / "lakeexportd.yaml"
        path.write_text(yaml.safe_dump(config))
        _export(path)
        users_first = _counts(sb.arrow("USER_SUMMARY"))
        as_of = dt.datetime.now(dt.UTC)  # after run 1's catalog commits, before run 2's
        # New rows after run 1's window (its end is the watermark) and before run 2's.
        stream_doc = work / "data_lake" / "streams" / "transaction_stream" / "_metadata.json"
        watermark = int(json.loads(stream_doc.read_text())["watermark"]["rowtime_ms"])
        sb.generate(60, (watermark + 1, int(as_of.timestamp() * 1000)))
        _export(path)
        yield Catalogued(catalog_db, as_of, config,
                         wire_truth(sb.arrow("TRANSACTION_STREAM")), users_first,
                         _counts(sb.arrow("USER_SUMMARY")))


@pytest.fixture(scope="module")
def pyiceberg_read(lake: Catalogued) -> dict[str, Any]:
    """What the README's PyIceberg block leaves behind (run once for the module)."""
    return lake.run("pyiceberg")


def test_the_lake_has_a_past_to_read(lake: Catalogued) -> None:
    """Run 2 added rows to the stream and changed the table, so version 1 is not now."""
    assert lake.truth.num_rows == 860
    assert lake.users_first != lake.users
    assert ONE_DAY in lake.daily()


def test_pyiceberg_reads_every_row_and_value_of_the_stream(
        lake: Catalogued, pyiceberg_read: dict[str, Any]) -> None:
    """PyIceberg to Arrow: every row once, every value (nested, DECIMAL, TIMESTAMP, TIME,
    BYTES) equal to the sandbox's, and year/month/day equal to each row's event day."""
    assert sorted(pyiceberg_read["tables"]) == [("lake", "transaction_stream"),
                                                 ("lake", "user_summary")]
    read: pa.Table = pyiceberg_read["transactions"]
    ids = read.column("TRANSACTION_ID").to_pylist()
    assert sorted(ids) == lake.ids()
    days = lake.day_of()
    for row in read.select(["TRANSACTION_ID", "year", "month", "day"]).to_pylist():
        assert (row["year"], row["month"], row["day"]) == days[row["TRANSACTION_ID"]]
    assert read.schema.field("TRANSACTION_TIME").type == pa.timestamp("us", tz="UTC")
    read = read.sort_by("TRANSACTION_ID")
    truth = lake.truth.sort_by("TRANSACTION_ID")
    for name in truth.column_names:  # Iceberg hands out microseconds: cast back, exactly
        expected = truth.column(name).to_pylist()
        assert read.column(name).cast(truth.schema.field(name).type).to_pylist() == expected, name


def test_pyiceberg_filters_one_day_to_pandas_exactly(
        lake: Catalogued, pyiceberg_read: dict[str, Any]) -> None:
    """The day filter gives that day's rows, in pandas, with the exact AMOUNT sum."""
    one_day = pyiceberg_read["one_day"]
    expected = [i for i, day in lake.day_of().items() if day == ONE_DAY]
    assert sorted(one_day["TRANSACTION_ID"]) == sorted(expected)
    assert sum(one_day["AMOUNT"], Decimal(0)) == lake.daily()[ONE_DAY][1]
    assert set(zip(one_day["year"], one_day["month"], one_day["day"])) == {ONE_DAY}


def test_readme_warning_about_pyiceberg_partition_filters_holds(
        lake: Catalogued, pyiceberg_read: dict[str, Any]) -> None:
    """The pitfall the README warns of is real in the pinned PyIceberg: the same filter with
    the partition columns left out of ``selected_fields`` returns no row (if this fails,
    PyIceberg fixed it: drop the warning from the README)."""
    stream = pyiceberg_read["stream"]
    left_out = stream.scan(row_filter="year = 2026 AND month = 1 AND day = 2",
                           selected_fields=("TRANSACTION_ID",)).to_arrow()
    assert lake.daily()[ONE_DAY][0] > 0 and left_out.num_rows == 0


def test_pyiceberg_time_travels_by_snapshot_id_and_by_timestamp(
        lake: Catalogued, pyiceberg_read: dict[str, Any]) -> None:
    """The table now is the sandbox's table now; version 1 by its snapshot id and the
    snapshot current at ``as_of`` (between the runs) are both the table at run 1."""
    assert {r["USER_ID"]: r["TRANSACTION_COUNT"]
            for r in pyiceberg_read["users_now"].to_dict("records")} == lake.users
    assert _counts(pyiceberg_read["users_v1"]) == lake.users_first
    assert _counts(pyiceberg_read["users_then"]) == lake.users_first


def test_readme_descriptions_reach_the_catalog(
        lake: Catalogued, pyiceberg_read: dict[str, Any]) -> None:
    """The README config's description, owner and tags are the table's properties."""
    owner = lake.config["defaults"]["owner"]
    feeds = {f["name"]: f for f in lake.config["feeds"]}
    for table, name in ((pyiceberg_read["stream"], "transaction_stream"),
                        (pyiceberg_read["users"], "user_summary")):
        properties = table.properties
        assert properties["comment"] == feeds[name]["description"]
        assert properties["owner"] == owner
        assert properties["lakeexportd.tags"].split(",") == feeds[name]["tags"]


def test_polars_reads_days_exactly_and_version_1(lake: Catalogued) -> None:
    """Polars scan_iceberg: rows and exact sums per integer day, the table at version 1."""
    planner = os.environ.pop(PLANNER, None)  # the block sets it itself; put it back after
    try:
        ns = lake.run("polars")
    finally:
        os.environ.pop(PLANNER, None)
        if planner is not None:
            os.environ[PLANNER] = planner
    daily = {(r["year"], r["month"], r["day"]): (r["rows"], r["amount"])
             for r in ns["daily"].to_dicts()}
    assert daily == lake.daily()
    users_v1 = ns["users_v1"]
    assert dict(zip(users_v1["USER_ID"].to_list(),
                    users_v1["TRANSACTION_COUNT"].to_list())) == lake.users_first


def test_duckdb_iceberg_extension_reads_days_exactly_and_the_past(lake: Catalogued) -> None:
    """DuckDB 1.5.5 with the pip iceberg extension: days and exact sums now, and the table
    at ``as_of`` with ``snapshot_from_timestamp``."""
    if not DUCKDB_PYTHON.exists():
        pytest.fail(f"{DUCKDB_PYTHON} is missing: run `make install` (it builds .venv-duckdb "
                    "from requirements/duckdb-readers.lock)", pytrace=False)
    done = subprocess.run([str(DUCKDB_PYTHON), "-c", lake.code("duckdb") + _DUCKDB_RESULT],
                          capture_output=True, text=True, timeout=180, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    daily = {(y, m, d): (rows, Decimal(amount)) for y, m, d, rows, amount in result["daily"]}
    assert daily == lake.daily()
    assert dict(result["users_then"]) == lake.users_first
    assert Counter(user for user, _ in result["users_then"]).most_common(1)[0][1] == 1


def test_spark_and_trino_blocks_name_the_catalog_as_its_database_does(
        lake: Catalogued) -> None:
    """Spark's block compiles and Trino's parses (not run: no jars, no server); both open the
    JDBC catalog under the name lakeexportd wrote into ``iceberg_tables``."""
    with contextlib.closing(sqlite3.connect(f"file:{lake.catalog_db}?mode=ro", uri=True)) as db:
        names = {name for (name,) in db.execute("SELECT DISTINCT catalog_name FROM iceberg_tables")}
    assert len(names) == 1
    (name,) = names
    spark = snippet("spark")
    compile(spark, "README.md", "exec")
    assert f'"spark.sql.catalog.{name}", "org.apache.iceberg.spark.SparkCatalog"' in spark
    for key in ("type", "uri", "warehouse"):
        assert f'"spark.sql.catalog.{name}.{key}"' in spark
    assert "TIMESTAMP AS OF" in spark
    blocks = re.findall(r"```properties\n(.*?)```", _reading(), re.S)
    assert len(blocks) == 1
    trino = dict(line.split("=", 1) for line in blocks[0].splitlines() if line.strip())
    assert trino["connector.name"] == "iceberg" and trino["iceberg.catalog.type"] == "jdbc"
    assert trino["iceberg.jdbc-catalog.catalog-name"] == name
    for key in ("connection-url", "connection-user", "connection-password",
                "default-warehouse-dir"):
        assert f"iceberg.jdbc-catalog.{key}" in trino
