"""A DuckDB scan of a 30-day stream with one file per minute, before and after compaction.

43,200 files (30 days x 1,440 minutes, ``--rows`` rows each: ROWTIME, TRANSACTION_ID, an exact
DECIMAL(10, 2) AMOUNT) are written with the lake's own writer (``parquet_writer.ParquetFile``:
Snappy, dictionary, statistics) and listed in a real ``_metadata.json``. DuckDB then counts
and sums ``read_parquet('<root>/streams/tx/**/*.parquet', hive_partitioning=true)``
(best of 3, a fresh connection each, after one warm-up); then the real CLI runs
``lakeexportd compact tx --before <day after the last>`` (timed; ``lake.orphan_grace: 0s`` so
the run deletes its inputs at once, as a later run would after the grace); then the same scan
again. Count and sum must be equal to the generated ones before and after.

    python -m benchmarks.compaction_scan               # 30 days x 1,440 files x 3 rows
    python -m benchmarks.compaction_scan --days 2      # quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa

from lakeexportd.lake import layout
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import (
    FileEntry,
    Partition,
    SchemaColumn,
    StreamMetadata,
)
from lakeexportd.lake.parquet_writer import ParquetFile
from lakeexportd.lake.storage import LOCAL

START = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
RESULTS = Path(__file__).parent / "results"
SCHEMA = pa.schema([
    pa.field("ROWTIME", pa.int64(), metadata={"ksql_type": "BIGINT"}),
    pa.field("TRANSACTION_ID", pa.string(), metadata={"ksql_type": "STRING"}),
    pa.field("AMOUNT", pa.decimal128(10, 2), metadata={"ksql_type": "DECIMAL(10, 2)"}),
])


def generate(root: Path, days: int, rows: int) -> tuple[int, Decimal, int]:
    """Write the files and the document; returns (rows, exact sum, files)."""
    feed_dir = layout.feed_dir(root, "stream", "tx")
    partitions = []
    total, amount = 0, Decimal(0)
    serial = 0
    for d in range(days):
        day = START + dt.timedelta(days=d)
        directory = feed_dir / layout.day_partition(day.date())
        directory.mkdir(parents=True)
        files = []
        for m in range(1440):
            moment = day + dt.timedelta(minutes=m)
            ms = int(moment.timestamp() * 1000)
            values = [Decimal(f"{(serial + i) % 100_000}.{(serial + i) % 97:02d}")
                      for i in range(rows)]
            batch = pa.record_batch([
                pa.array([ms + i for i in range(rows)], pa.int64()),
                pa.array([f"tx-{serial + i:09d}" for i in range(rows)]),
                pa.array(values, pa.decimal128(10, 2)),
            ], schema=SCHEMA)
            serial += rows
            amount += sum(values, Decimal(0))
            name = layout.data_file_name(moment + dt.timedelta(seconds=30))
            handle = ParquetFile(directory / name, SCHEMA, file_mode=0o640,
                                 failpoint_prefix="append", storage=LOCAL)
            handle.append(batch, ms, ms + rows - 1)
            size = handle.close()
            files.append(FileEntry(name, rows, size, ms, ms + rows - 1))
        partitions.append(Partition(layout.day_partition(day.date()), tuple(files)))
        total += rows * 1440
    columns = tuple(SchemaColumn(f.name, (f.metadata or {})[b"ksql_type"].decode(), str(f.type))
                    for f in SCHEMA)
    last = START + dt.timedelta(days=days)
    store = MetadataStore(LOCAL)
    store.load(feed_dir)
    store.commit(feed_dir, StreamMetadata(
        feed="tx", source="TX", schema=columns, partitions=tuple(partitions),
        watermark_ms=int(last.timestamp() * 1000)))
    return total, amount, days * 1440


def scan(root: Path) -> tuple[float, int, Decimal]:
    """Best of 3 (after a warm-up) of DuckDB's count + sum over the glob."""
    query = ("SELECT count(*), sum(AMOUNT) FROM read_parquet("
             f"'{root}/streams/tx/**/*.parquet', hive_partitioning=true)")
    best = float("inf")
    result = None
    for attempt in range(4):
        connection = duckdb.connect()
        started = time.perf_counter()
        result = connection.sql(query).fetchall()[0]
        elapsed = time.perf_counter() - started
        connection.close()
        if attempt:
            best = min(best, elapsed)
    assert result is not None
    return best, int(result[0]), Decimal(result[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "compaction_scan.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "lake"
        started = time.perf_counter()
        rows, amount, files = generate(root, args.days, args.rows)
        print(f"generated {files:,} files, {rows:,} rows in {time.perf_counter() - started:.1f} s",
              flush=True)
        before_s, count, total = scan(root)
        assert (count, total) == (rows, amount), (count, total, rows, amount)
        print(f"before: {before_s:.3f} s over {files:,} files", flush=True)
        config = Path(tmp) / "lakeexportd.yaml"
        config.write_text(f"ksqldb: {{url: 'http://127.0.0.1:1'}}\n"
                          f"lake: {{root: '{root}', orphan_grace: 0s}}\n"
                          f"logging: {{dir: '{Path(tmp) / 'logs'}'}}\n"
                          "feeds:\n  - {name: tx, source: TX, kind: stream}\n")
        before_day = (START + dt.timedelta(days=args.days)).date().isoformat()
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lakeexportd", "compact", "-c", str(config),
                               "tx", "--before", before_day], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        compact_s = time.perf_counter() - started
        assert done.returncode == 0, done.stderr
        print(done.stdout.splitlines()[0])
        after_files = sum(1 for _ in (root / "streams" / "tx").rglob("*.parquet"))
        after_s, count, total = scan(root)
        assert (count, total) == (rows, amount), (count, total, rows, amount)
        print(f"compact: {compact_s:.1f} s; after: {after_s:.3f} s over {after_files} files")
    lines = [
        "# DuckDB scan of a one-file-per-minute stream, before and after compaction",
        "",
        f"`python -m benchmarks.compaction_scan --days {args.days} --rows {args.rows}` on "
        f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, DuckDB {duckdb.__version__}), "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d}.",
        "",
        "Query: `SELECT count(*), sum(AMOUNT) FROM read_parquet('<root>/streams/tx/**/*.parquet', "
        "hive_partitioning=true)`, best of 3 after a warm-up, a fresh connection each.",
        "",
        "| | files | rows | DuckDB count+sum |",
        "|---|---:|---:|---:|",
        f"| before | {files:,} | {rows:,} | {before_s:.3f} s |",
        f"| after `lakeexportd compact` | {after_files:,} | {rows:,} | {after_s:.3f} s |",
        "",
        f"`lakeexportd compact tx --before {before_day}` (the CLI, process start included): "
        f"{compact_s:.1f} s. Count and exact DECIMAL sum equal before and after.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
