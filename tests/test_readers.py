"""Real readers on a real lake: DuckDB, Polars and pandas, through the README's own snippets."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from lakecheck import NOW, exporter, feed, wire_truth

from lakeexportd.sandbox import Sandbox

README = Path(__file__).resolve().parents[1] / "README.md"


def reading_snippets() -> list[str]:
    """The Python blocks of the README's "Reading the lake" section, in order."""
    text = README.read_text()
    section = text.split("## Reading the lake", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


class Lake:
    def __init__(self, root: Path, truth: Any, users: Any) -> None:
        self.root, self.truth, self.users = root, truth, users

    def run(self, snippet: str) -> dict[str, Any]:
        namespace: dict[str, Any] = {}
        exec(compile(snippet.replace('"data_lake"', repr(str(self.root))), "README.md", "exec"), namespace)
        return namespace


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """Five days of a nested stream, a column added midway, and three table versions."""
    root = tmp_path_factory.mktemp("lake")
    with Sandbox.start(seed=8, preload=2000, preload_days=5) as sb:
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
        for minute in range(3):
            ex.export(feed("user_summary", "USER_SUMMARY", kind="table"), NOW + dt.timedelta(minutes=minute))
        yield Lake(root, wire_truth(sb.arrow("TRANSACTION_STREAM")), sb.arrow("USER_SUMMARY"))
        ex.client.close()


def test_readme_has_a_snippet_for_each_reader() -> None:
    """The section shows DuckDB (stream and table), Polars and pandas, plus Spark."""
    snippets = reading_snippets()
    assert len(snippets) == 4
    assert "spark.read" in README.read_text().split("## Reading the lake", 1)[1]


def test_duckdb_reads_the_stream_by_day_with_exact_decimals(lake: Lake) -> None:
    """DuckDB's hive read gives integer days, every row, and exact DECIMAL sums."""
    ns = lake.run(reading_snippets()[0])
    daily = ns["daily"]
    assert sum(row[3] for row in daily) == lake.truth.num_rows
    assert all(isinstance(v, int) for row in daily for v in row[:3])
    assert sum(row[4] for row in daily) == sum(lake.truth.column("AMOUNT").to_pylist())
    assert isinstance(daily[0][4], Decimal)
    assert ns["one_day"][0][0] == daily[0][3]


def test_duckdb_prunes_partitions(lake: Lake) -> None:
    """A filter on year/month/day scans only that day's files, as the plan shows."""
    glob = f"{lake.root}/streams/transaction_stream/**/*.parquet"
    day = duckdb.sql(
        f"SELECT year, month, day FROM read_parquet('{glob}', hive_partitioning=true) ORDER BY ALL LIMIT 1"
    ).fetchall()[0]
    plan = duckdb.sql(
        f"EXPLAIN SELECT sum(AMOUNT) FROM read_parquet('{glob}', hive_partitioning=true, union_by_name=true) "
        f"WHERE year = {day[0]} AND month = {day[1]} AND day = {day[2]}"
    ).fetchall()[0][1]
    scanned = re.search(r"Scanning Files: (\d+)/(\d+)", plan)
    assert "File Filters" in plan and scanned, plan
    assert int(scanned[1]) < int(scanned[2])


def test_duckdb_reads_the_current_table_version(lake: Lake) -> None:
    """Only the version _metadata.json names current is read: the table's rows, once."""
    ns = lake.run(reading_snippets()[1])
    assert len(ns["users"]) == lake.users.num_rows
    assert len({row[0] for row in ns["users"]}) == lake.users.num_rows


def test_polars_reads_stream_with_added_column_and_the_table(lake: Lake) -> None:
    """Polars sees every row, the added column, integer partitions and the current table."""
    ns = lake.run(reading_snippets()[2])
    transactions = ns["transactions"]
    assert transactions.height == lake.truth.num_rows
    assert "NOTE" in transactions.columns and str(transactions.schema["year"]).startswith("Int")
    assert sorted(transactions["TRANSACTION_ID"].to_list()) == sorted(lake.truth.column("TRANSACTION_ID").to_pylist())
    assert str(transactions.schema["AMOUNT"]) == "Decimal(precision=10, scale=2)"
    assert ns["users"].height == lake.users.num_rows


def test_pandas_reads_stream_with_added_column_and_the_table(lake: Lake) -> None:
    """pandas sees every row, the added column, integer partitions and the current table."""
    ns = lake.run(reading_snippets()[3])
    transactions = ns["transactions"]
    assert len(transactions) == lake.truth.num_rows
    assert "NOTE" in transactions.columns and str(transactions["year"].dtype) == "int16"
    assert sum(transactions["AMOUNT"]) == sum(lake.truth.column("AMOUNT").to_pylist())
    assert len(ns["users"]) == lake.users.num_rows
