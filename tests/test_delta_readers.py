"""Real Delta readers on a Delta lake, through the README's own snippets ("Delta Lake feeds" →
"Reading"): deltalake, Polars and DuckDB (its ``delta`` extension from pip, in
``.venv-duckdb``) read the current version and version 1, and what they return is compared
with the rows the sandbox served: never with lakeexportd's own code or summary.

The lake: a ``format: delta`` stream exported twice (the second run's rows generated after the
first run) and a table exported twice with its rows changed in between, so version 1 of each
is the first run. The snippets run as written, only ``"data_lake"`` pointed at the lake. The
Spark block is documented only (the Delta package cannot be downloaded here): the test checks
that it compiles and reads with ``versionAsOf``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from lakecheck import NOW, exporter, feed

from lakeexportd.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DUCKDB_PYTHON = ROOT / ".venv-duckdb" / "bin" / "python"
READERS = ("deltalake", "polars", "duckdb", "spark")
CLOCK = dt.datetime(2026, 1, 2, 12, tzinfo=dt.UTC).timestamp()
_DUCKDB_RESULT = """
import json as _json
print(_json.dumps({"daily": daily, "then": then, "users_then": users_then}, default=str))
"""


def snippet(reader: str) -> str:
    """One Python block of the README's Delta "Reading" subsection (in READERS order)."""
    section = README.read_text().split("## Delta Lake feeds", 1)[1].split("\n## ", 1)[0]
    section = section.split("### Reading", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == len(READERS), f"expected one block per reader {READERS}"
    return dict(zip(READERS, blocks))[reader]


@dataclasses.dataclass
class Truth:
    """What the sandbox served: the stream's rows at each run, the table's at each run."""

    root: Path
    first: pa.Table  # the stream's rows when run 1 exported (all of them were in its window)
    rows: pa.Table  # the stream's rows now
    users_first: dict[str, int]  # USER_SUMMARY at run 1: USER_ID -> TRANSACTION_COUNT
    users: dict[str, int]

    def run(self, code: str) -> dict[str, Any]:
        namespace: dict[str, Any] = {}
        exec(compile(code.replace('"data_lake"', repr(str(self.root))), "README.md", "exec"),
             namespace)
        return namespace

    def ids(self, table: pa.Table) -> list[str]:
        return sorted(table.column("TRANSACTION_ID").to_pylist())

    def daily(self) -> dict[tuple[int, int, int], tuple[int, Decimal]]:
        """(year, month, day) in UTC of each row's TRANSACTION_TIME -> rows, exact AMOUNT sum."""
        out: dict[tuple[int, int, int], tuple[int, Decimal]] = {}
        for row in self.rows.select(["TRANSACTION_TIME", "AMOUNT"]).to_pylist():
            moment = row["TRANSACTION_TIME"].astimezone(dt.UTC)
            key = (moment.year, moment.month, moment.day)
            count, amount = out.get(key, (0, Decimal(0)))
            out[key] = (count + 1, amount + row["AMOUNT"])
        return out


def _counts(table: pa.Table) -> dict[str, int]:
    return dict(zip(table.column("USER_ID").to_pylist(),
                    table.column("TRANSACTION_COUNT").to_pylist()))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Truth]:
    root = tmp_path_factory.mktemp("delta-lake")
    with Sandbox.start(seed=9, preload=800, preload_days=4, clock=lambda: CLOCK) as sb:
        ex = exporter(sb.url, root)
        stream = dataclasses.replace(
            feed("transaction_stream", "TRANSACTION_STREAM", settle_delay=0.0), format="delta")
        users = dataclasses.replace(feed("user_summary", "USER_SUMMARY", kind="table"),
                                    format="delta")
        newest = max(sb.arrow("TRANSACTION_STREAM").column("ROWTIME").to_pylist())
        start = dt.datetime.fromtimestamp(newest / 1000 + 1, dt.UTC)
        first = ex.export(stream, start)
        assert first.watermark_ms is not None
        first_rows = sb.arrow("TRANSACTION_STREAM")
        ex.export(users, NOW)
        users_first = _counts(sb.arrow("USER_SUMMARY"))
        sb.generate(60, (first.watermark_ms + 1, first.watermark_ms + 900))
        ex.export(stream, start + dt.timedelta(seconds=1))
        ex.export(users, NOW + dt.timedelta(minutes=1))
        yield Truth(root, first_rows, sb.arrow("TRANSACTION_STREAM"), users_first,
                    _counts(sb.arrow("USER_SUMMARY")))


def test_the_lake_has_a_past_to_read(lake: Truth) -> None:
    """Version 1 differs from now: the second run added rows and changed the table."""
    assert lake.first.num_rows == 800 and lake.rows.num_rows == 860
    assert lake.users_first != lake.users


def test_deltalake_reads_now_and_version_1(lake: Truth) -> None:
    """delta-rs: every row once now, exactly the first run's rows at version 1, and both
    snapshots of the table."""
    ns = lake.run(snippet("deltalake"))
    assert lake.ids(ns["now"]) == lake.ids(lake.rows)
    assert lake.ids(ns["then"]) == lake.ids(lake.first)
    assert sum(ns["now"].column("AMOUNT").to_pylist(), Decimal(0)) == \
        sum(lake.rows.column("AMOUNT").to_pylist(), Decimal(0))
    assert _counts(ns["users"]) == lake.users
    assert _counts(ns["users_then"]) == lake.users_first


def test_polars_reads_days_exactly_now_and_version_1(lake: Truth) -> None:
    """Polars scan_delta: rows and exact sums per integer day now; version 1's ids; the
    table's first snapshot."""
    ns = lake.run(snippet("polars"))
    daily = {(r["year"], r["month"], r["day"]): (r["rows"], r["amount"])
             for r in ns["daily"].to_dicts()}
    assert daily == lake.daily()
    assert sorted(ns["then"]["TRANSACTION_ID"].to_list()) == lake.ids(lake.first)
    assert dict(zip(ns["users_then"]["USER_ID"].to_list(),
                    ns["users_then"]["TRANSACTION_COUNT"].to_list())) == lake.users_first


def test_duckdb_delta_extension_reads_now_and_version_1(lake: Truth) -> None:
    """DuckDB 1.5.5 with the pip delta extension: days and exact sums now, version 1 with
    ``delta_scan(..., version := 1)``, for the stream and the table."""
    if not DUCKDB_PYTHON.exists():
        pytest.fail(f"{DUCKDB_PYTHON} is missing: run `make install` (it builds .venv-duckdb "
                    "from requirements/duckdb-readers.lock)", pytrace=False)
    code = snippet("duckdb").replace('"data_lake"', repr(str(lake.root))) + _DUCKDB_RESULT
    done = subprocess.run([str(DUCKDB_PYTHON), "-c", code], capture_output=True, text=True,
                          timeout=180, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    daily = {(y, m, d): (rows, Decimal(amount)) for y, m, d, rows, amount in result["daily"]}
    assert daily == lake.daily()
    assert sorted(i for (i,) in result["then"]) == lake.ids(lake.first)
    assert dict(result["users_then"]) == lake.users_first
    assert Counter(i for (i,) in result["then"]).most_common(1)[0][1] == 1


def test_spark_block_is_documented_with_version_as_of() -> None:
    """The Spark block compiles and time-travels with versionAsOf (not run: no Delta package)."""
    code = snippet("spark")
    compile(code, "README.md", "exec")
    assert '.option("versionAsOf", 1)' in code and 'format("delta")' in code
