"""Peak memory of a Delta export, flat in N (issue 13, requirement 6).

For each N the same flat body (``benchmarks/data.py``) is served by ``CannedServer`` with the
real framing (one HTTP/1.1 chunk per row), and each candidate runs in its own process, its
peak RSS taken by ``benchmarks.run.run_measured`` (``wait4`` through a small launcher):

- ``delta``: ``lakeexportd export`` of a ``format: delta`` stream feed (the real path: the
  lake's sinks write the files, one delta-rs commit lists them, ``_metadata.json`` summarised
  from the log);
- ``parquet``: the same feed as ``format: parquet``, for comparison;
- ``write_deltalake``: the design not taken: the same ksqlDB client's batches (same types,
  year/month/day added) streamed as one ``RecordBatchReader`` into
  ``deltalake.write_deltalake``; ``write_deltalake_small`` is the same with the knobs that
  should bound its buffers (``target_file_size`` 32 MiB, 100k-row row groups).

Every output is read back (Polars ``scan_delta`` / ``scan_parquet``): rows must be N, ids
distinct, and the exact AMOUNT sum the same for every candidate.

    python -m benchmarks.delta_memory                       # 1M, 2.5M, 5M
    python -m benchmarks.delta_memory --sizes 1000000 --only delta parquet
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.data import flat_body
from benchmarks.run import FEED, PYTHON, RESULTS, run_measured
from benchmarks.server import CannedServer

CANDIDATES = ("delta", "parquet", "write_deltalake", "write_deltalake_small")
TARGET_MB = 350


@dataclass
class MemoryOutcome:
    rows: int
    candidate: str
    seconds: float
    peak_rss_mb: float
    files: int
    summary: dict[str, Any]


def _config(url: str, root: Path, path: Path, fmt: str) -> Path:
    path.write_text(
        f"ksqldb: {{url: \"{url}\", api: query-stream, max_retries: 0, read_timeout: 600s}}\n"
        f"lake: {{root: \"{root}\"}}\n"
        f"feeds:\n  - {{name: {FEED}, source: BENCH, kind: stream, settle_delay: 0s, "
        f"format: {fmt}}}\n")
    return path


def summarise(out: Path, fmt: str) -> dict[str, Any]:
    """Rows, distinct ids and the exact AMOUNT sum, read back by Polars (not lakeexportd)."""
    import polars as pl

    if fmt == "delta":
        frame = pl.scan_delta(str(out))
        files = len(list(out.rglob("*.parquet")))
    else:
        frame = pl.scan_parquet(str(out / "**" / "*.parquet"), hive_partitioning=True)
        files = len(list(out.rglob("*.parquet")))
    row = frame.select(pl.len().alias("rows"),
                       pl.col("TRANSACTION_ID").n_unique().alias("distinct_ids"),
                       pl.col("AMOUNT").sum().cast(pl.String).alias("sum_amount")).collect()
    return {**row.to_dicts()[0], "files": files}


def run_one(candidate: str, rows: int, url: str, work: Path) -> MemoryOutcome:
    out = work / candidate
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if candidate in ("delta", "parquet"):
        config = _config(url, out / "lake", work / f"{candidate}.yaml", candidate)
        argv = [PYTHON, "-m", "lakeexportd", "export", "-c", str(config), FEED]
        data = out / "lake" / "streams" / FEED
        fmt = candidate
    else:
        data = out / "table"
        argv = [PYTHON, "-m", "benchmarks.delta_memory", "--child", candidate, url, str(data)]
        fmt = "delta"
    env = {k: v for k, v in os.environ.items() if k != "LAKEEXPORTD_FAILPOINT"}
    seconds, _cpu, rss, _ = run_measured(argv, env)
    summary = summarise(data, fmt)
    shutil.rmtree(out, ignore_errors=True)
    return MemoryOutcome(rows, candidate, round(seconds, 2), round(rss, 1),
                         summary.pop("files"), summary)


def child_write_deltalake(kind: str, url: str, out: str) -> None:
    """The rejected design: lakeexportd's batches streamed into ``write_deltalake``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import WriterProperties, write_deltalake

    from lakeexportd.ksqldb.client import KsqlDBClient
    from lakeexportd.ksqldb.curl_stream import CurlTransport
    from lakeexportd.lake import delta

    client = KsqlDBClient(CurlTransport(url, read_timeout=600), api="query-stream",
                          max_retries=0)
    with client.query("SELECT ROWTIME, * FROM BENCH;", batch_size=10_000) as result:
        files = delta.file_schema(result.schema, FEED, kind="stream")
        schema = delta.table_schema(files, kind="stream")

        def batches() -> Any:
            for batch in result.batches():
                b = delta.to_file_schema(batch, files)
                at = pc.cast(b.column("ROWTIME"), pa.timestamp("ms", tz="UTC"))
                parts = [pc.cast(f(at), pa.int32()) for f in (pc.year, pc.month, pc.day)]
                yield pa.RecordBatch.from_arrays([*b.columns, *parts], schema=schema)

        reader = pa.RecordBatchReader.from_batches(schema, batches())
        knobs: dict[str, Any] = {}
        if kind == "write_deltalake_small":
            knobs = {"target_file_size": 32 * 1024 * 1024,
                     "writer_properties": WriterProperties(max_row_group_size=100_000,
                                                           compression="SNAPPY")}
        write_deltalake(out, reader, partition_by=["year", "month", "day"], mode="error",
                        **knobs)
    client.close()


def table(outcomes: list[MemoryOutcome]) -> str:
    lines = ["| rows      | candidate             | seconds | peak RSS MB | files |",
             "|-----------|-----------------------|---------|-------------|-------|"]
    for o in outcomes:
        lines.append(f"| {o.rows:>9,} | {o.candidate:<21} | {o.seconds:>7.2f} "
                     f"| {o.peak_rss_mb:>11.0f} | {o.files:>5} |")
    return "\n".join(lines)


def check(outcomes: list[MemoryOutcome]) -> None:
    by_rows: dict[int, list[MemoryOutcome]] = {}
    for o in outcomes:
        by_rows.setdefault(o.rows, []).append(o)
    for n, group in by_rows.items():
        for o in group:
            if o.summary["rows"] != n or o.summary["distinct_ids"] != n:
                raise SystemExit(f"{n}: {o.candidate} read back {o.summary}")
            if o.summary["sum_amount"] != group[0].summary["sum_amount"]:
                raise SystemExit(f"{n}: {o.candidate} sums {o.summary} but {group[0].candidate} "
                                 f"{group[0].summary}")


def main(argv: list[str] | None = None) -> None:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--child"]:
        child_write_deltalake(*args_in[1:4])
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.delta_memory",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*",
                        help="row counts (default 1M 2.5M 5M)")
    parser.add_argument("--only", choices=CANDIDATES, nargs="+", help="these candidates only")
    args = parser.parse_args(args_in)
    sizes = args.sizes or [1_000_000, 2_500_000, 5_000_000]
    candidates = args.only or list(CANDIDATES)
    outcomes: list[MemoryOutcome] = []
    with tempfile.TemporaryDirectory(prefix="bench-delta-") as tmp:
        for n in sizes:
            with CannedServer(flat_body(n), "rows") as server:
                for name in candidates:
                    o = run_one(name, n, server.url, Path(tmp))
                    print(f"  {n:>9,} {name:<22} {o.seconds:7.2f}s {o.peak_rss_mb:7.0f} MB "
                          f"{o.files} files", file=sys.stderr, flush=True)
                    outcomes.append(o)
    check(outcomes)
    text = table(outcomes)
    print(text)
    delta = [o.peak_rss_mb for o in outcomes if o.candidate == "delta"]
    if delta and max(delta) >= TARGET_MB:
        print(f"delta export peaked at {max(delta):.0f} MB, over the {TARGET_MB} MB target",
              file=sys.stderr)
    stamp = dt.datetime.now(dt.UTC)
    doc = {"created": stamp.isoformat(timespec="seconds"),
           "command": "python -m benchmarks.delta_memory " + " ".join(args_in),
           "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
           "results": [asdict(o) for o in outcomes], "table": text.splitlines()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "delta_memory_latest.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
