"""Real readers on a real lake: DuckDB, Polars, pandas and Spark, through the README's own
snippets. Each ```python block of "Reading the lake" runs here exactly as written (only
``"data_lake"`` is pointed at the test's lake), and what it returns is checked against the
sandbox's rows: the ground truth never comes from lakeexportd's own code."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from lakecheck import NOW, StreamTruth, exporter, feed, wire_truth
from pyspark import SparkContext
from pyspark.sql import SparkSession

from lakeexportd.sandbox import Sandbox

README = Path(__file__).resolve().parents[1] / "README.md"
READERS = ("duckdb_stream", "duckdb_table", "polars", "pandas", "spark")
# The sandbox's clock: its five preloaded days cross a year and a month boundary, so the lake
# always has partition values with a leading zero (month=01, day=01) and without (month=12).
CLOCK = dt.datetime(2026, 1, 2, 12, tzinfo=dt.UTC).timestamp()
TABLE_RUNS = 3  # a new feed: versions v1, v2, v3; the last run's is current


def snippet(reader: str) -> str:
    """One Python block of the README's "Reading the lake" section (they come in READERS order)."""
    section = README.read_text().split("## Reading the lake", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### ", 1)[0]  # the object-store subsection has its own test
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == len(READERS), f"expected one block per reader {READERS}"
    return dict(zip(READERS, blocks))[reader]


class Lake(StreamTruth):
    def __init__(self, root: Path, truth: pa.Table, users: pa.Table) -> None:
        self.root, self.truth, self.users = root, truth, users

    def run(self, code: str) -> dict[str, Any]:
        namespace: dict[str, Any] = {}
        exec(compile(code.replace('"data_lake"', repr(str(self.root))), "README.md", "exec"), namespace)
        return namespace


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """Six days of a stream with every ksqlDB type (nested ones too), a column added midway,
    and three versions of a table whose rows change between them."""
    root = tmp_path_factory.mktemp("lake")
    with Sandbox.start(seed=8, preload=2000, preload_days=5, clock=lambda: CLOCK) as sb:
        ex = exporter(sb.url, root)
        stream = feed("transaction_stream", "TRANSACTION_STREAM", settle_delay=0.0)
        # Start after the newest preloaded row: the generator may place rows a few seconds ahead.
        newest = max(sb.arrow("TRANSACTION_STREAM").column("ROWTIME").to_pylist())
        start = dt.datetime.fromtimestamp(newest / 1000 + 1, dt.UTC)
        first = ex.export(stream, start)
        assert first.watermark_ms is not None
        ex.client.ksql("ALTER STREAM TRANSACTION_STREAM ADD COLUMN NOTE STRING;")
        sb.generate(40, (first.watermark_ms + 1, first.watermark_ms + 900))
        ex.export(stream, start + dt.timedelta(seconds=1))
        truth = wire_truth(sb.arrow("TRANSACTION_STREAM", changed={"NOTE": pa.string()}))
        users = feed("user_summary", "USER_SUMMARY", kind="table")
        for run in range(TABLE_RUNS):
            if run:  # more transactions (after the stream's last window): the table changes
                sb.generate(30, (first.watermark_ms + 5_000, first.watermark_ms + 6_000))
            ex.export(users, NOW + dt.timedelta(minutes=run))
        yield Lake(root, truth, sb.arrow("USER_SUMMARY"))


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    """One local Spark for the module (its JVM takes ~10 s to start); the JVM exits at the end."""
    session = (
        SparkSession.builder.master("local[2]")
        .appName("lakeexportd-test-readers")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")  # listen on loopback only
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        # Not UTC, so the test sees the README's own time zone setting (the machine runs in UTC).
        .config("spark.sql.session.timeZone", "Pacific/Auckland")
        # Short jobs on 2 shared cores: C2 compiler and parallel GC threads cost more than they
        # save (measured: ~12 s instead of ~22 s for start, read, aggregate and toArrow).
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .getOrCreate()
    )
    try:
        yield session
    finally:
        session.stop()
        # stop() keeps the JVM for a next session; it exits once its stdin closes.
        gateway = SparkContext._gateway
        if gateway is not None:
            gateway.shutdown()
            gateway.proc.stdin.close()
            gateway.proc.wait(timeout=60)
            SparkContext._gateway = None
            SparkContext._jvm = None


@pytest.fixture(scope="module")
def spark_read(lake: Lake, spark: SparkSession) -> dict[str, Any]:
    """What the README's Spark snippet leaves behind (run once: each run collects ``daily``)."""
    ns = lake.run(snippet("spark"))
    assert ns["spark"] is spark  # its getOrCreate() found this module's session
    return ns


def test_readme_has_a_snippet_for_each_reader() -> None:
    """The section has one runnable block per reader, each using that reader."""
    for reader, library in zip(READERS, ("duckdb", "duckdb", "polars", "pandas", "pyspark")):
        assert f"import {library}" in snippet(reader) or f"from {library}" in snippet(reader)


def test_duckdb_reads_the_stream_by_day_with_exact_decimals(lake: Lake) -> None:
    """DuckDB gives integer days (leading zeros included), every row, exact DECIMAL sums."""
    ns = lake.run(snippet("duckdb_stream"))
    daily = ns["daily"]
    assert {(year, month) for year, month, _ in lake.days()} == {(2025, 12), (2026, 1)}
    assert [tuple(row[:3]) for row in daily] == lake.days()
    assert all(type(v) is int for row in daily for v in row[:3])
    assert sum(row[3] for row in daily) == lake.truth.num_rows
    assert sum(row[4] for row in daily) == sum(lake.truth.column("AMOUNT").to_pylist())
    assert isinstance(daily[0][4], Decimal)
    assert ns["one_day"][0][0] == daily[0][3]


def test_duckdb_prunes_partitions(lake: Lake) -> None:
    """A filter on year/month/day scans only that day's files, as the plan shows."""
    ns = lake.run(snippet("duckdb_stream"))
    year, month, day = ns["daily"][0][:3]
    plan = duckdb.sql(
        f"EXPLAIN SELECT sum(AMOUNT) FROM {ns['transactions']} "
        f"WHERE year = {year} AND month = {month} AND day = {day}"
    ).fetchall()[0][1]
    scanned = re.search(r"Scanning Files: (\d+)/(\d+)", plan)
    assert "File Filters" in plan and scanned, plan
    assert int(scanned[1]) < int(scanned[2])


def test_duckdb_reads_the_current_table_version(lake: Lake) -> None:
    """Only the version _metadata.json names current is read: the table's rows, once."""
    ns = lake.run(snippet("duckdb_table"))
    assert ns["current"] == TABLE_RUNS
    assert len(ns["users"]) == lake.users.num_rows
    assert len({row[0] for row in ns["users"]}) == lake.users.num_rows
    assert sum(row[1] for row in ns["users"]) == sum(lake.users.column("TRANSACTION_COUNT").to_pylist())


def test_polars_reads_stream_with_added_column_and_the_table(lake: Lake) -> None:
    """Polars sees every row, the added column, integer partitions, TIME, and the current table."""
    ns = lake.run(snippet("polars"))
    transactions = ns["transactions"].sort("TRANSACTION_ID")
    assert transactions.height == lake.truth.num_rows
    assert "NOTE" in transactions.columns
    assert [str(transactions.schema[c]) for c in ("year", "month", "day")] == ["Int16", "Int8", "Int8"]
    assert sorted(set(transactions.select("year", "month", "day").rows())) == lake.days()
    assert transactions["TRANSACTION_ID"].to_list() == lake.by_id("TRANSACTION_ID")
    assert str(transactions.schema["AMOUNT"]) == "Decimal(precision=10, scale=2)"
    assert transactions["LOCAL_TIME"].to_list() == lake.by_id("LOCAL_TIME")
    assert ns["users"].height == lake.users.num_rows
    assert ns["users"]["TRANSACTION_COUNT"].sum() == sum(lake.users.column("TRANSACTION_COUNT").to_pylist())


def test_pandas_reads_stream_with_added_column_and_the_table(lake: Lake) -> None:
    """pandas sees every row, the added column, integer partitions, TIME, and the current table."""
    ns = lake.run(snippet("pandas"))
    transactions = ns["transactions"].sort_values("TRANSACTION_ID")
    assert len(transactions) == lake.truth.num_rows
    assert "NOTE" in transactions.columns and str(transactions["month"].dtype) == "int8"
    assert sorted(set(zip(transactions["year"], transactions["month"], transactions["day"]))) == lake.days()
    assert sum(transactions["AMOUNT"]) == sum(lake.truth.column("AMOUNT").to_pylist())
    assert transactions["LOCAL_TIME"].to_list() == lake.by_id("LOCAL_TIME")
    assert len(ns["users"]) == lake.users.num_rows
    assert ns["users"]["TRANSACTION_COUNT"].sum() == sum(lake.users.column("TRANSACTION_COUNT").to_pylist())


def test_spark_reads_every_row_and_type_of_the_stream(lake: Lake, spark_read: dict[str, Any]) -> None:
    """Spark reads every row with every value pyarrow reads from the sandbox: DECIMAL, BYTES,
    TIME, nested ARRAY/MAP/STRUCT, the added column, and integer partitions."""
    ns = spark_read
    transactions = ns["transactions"]
    types = {f.name: f.dataType.simpleString() for f in transactions.schema.fields}
    assert [types["year"], types["month"], types["day"]] == ["int", "int", "int"]
    assert types["AMOUNT"] == "decimal(10,2)" and types["LOCAL_TIME"] == "time(6)"
    assert types["TRANSACTION_TIME"] == "timestamp" and "NOTE" in types
    read = transactions.toArrow()
    assert read.num_rows == lake.truth.num_rows
    read = read.select(lake.truth.column_names).sort_by("TRANSACTION_ID")
    for name in lake.truth.column_names:  # Spark counts in micro-/nanoseconds: cast, exactly
        expected = lake.by_id(name)
        assert read.column(name).cast(lake.truth.schema.field(name).type).to_pylist() == expected, name


def test_spark_sums_days_exactly_in_utc(lake: Lake, spark_read: dict[str, Any]) -> None:
    """Spark's daily counts and DECIMAL sums are exact, its days are the partitions', and with
    the session in UTC its TIMESTAMPs format and fall into days as the lake's UTC days."""
    ns = spark_read
    daily = ns["daily"]
    assert [(r["year"], r["month"], r["day"]) for r in daily] == lake.days()
    assert sum(r["transactions"] for r in daily) == lake.truth.num_rows
    assert isinstance(daily[0]["amount"], Decimal)
    assert sum(r["amount"] for r in daily) == sum(lake.truth.column("AMOUNT").to_pylist())
    shown = ns["transactions"].selectExpr(
        "TRANSACTION_ID",
        "date_format(TRANSACTION_TIME, 'yyyy-MM-dd HH:mm:ss.SSS') AS shown",
        "to_date(TRANSACTION_TIME) = make_date(year, month, day) AS in_its_partition",
    ).orderBy("TRANSACTION_ID").collect()
    expected = [t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] for t in lake.by_id("TRANSACTION_TIME")]
    assert [r["shown"] for r in shown] == expected
    assert all(r["in_its_partition"] for r in shown)  # TRANSACTION_TIME is the row's ROWTIME


def test_spark_reads_the_current_table_version(lake: Lake, spark_read: dict[str, Any]) -> None:
    """The version _metadata.json names (read with json) is the last run's; Spark reads it only."""
    ns = spark_read
    assert ns["current"] == TABLE_RUNS
    users = ns["users"].toArrow().sort_by("USER_ID")
    truth = lake.users.sort_by("USER_ID")
    for name in truth.column_names:
        if name != "ROWTIME":
            assert users.column(name).cast(truth.schema.field(name).type).to_pylist() == truth.column(name).to_pylist(), name
