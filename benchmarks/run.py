"""``make bench``: time lakeexportd, the native floor and the naive export on one canned body.

The body is framed as ksqlDB frames it: one HTTP/1.1 chunk per row (``h1``), and one HTTP/2
DATA frame per row over h2c (``h2c``); 4 MiB chunks (``large``, the old framing) are reported
beside them at the smallest size. Each candidate runs in its own subprocess against the same
loopback server; its wall time is
measured around the whole process (interpreter start included, the same for all) and its peak
RSS comes from ``wait4``. Every output is then summarised with DuckDB (row count, exact sum of
AMOUNT, distinct ids and an order-free hash of them, rows per day, rows outside their day) and
the summaries must agree, so no candidate can win by writing less.

    python -m benchmarks.run            # 1M and 5M flat rows (naive at 1M), 200k nested rows
    python -m benchmarks.run --quick    # 200k flat rows only
    python -m benchmarks.run --sizes 1000000 --wires h1 --no-nested
    python -m benchmarks.run --quick --no-s3

At the smallest flat size over ``h1`` the same export also runs into a bucket on moto's S3
server (``benchmarks/objectstore.py``): rows/s, upload MB/s (data objects' bytes / export
time), peak RSS, and what moto itself costs (its CPU seconds, and the same bytes uploaded to
moto, to a LocalStore and to a MemoryStore).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.data import flat_body, nested_body
from benchmarks.objectstore import MotoServer, UploadSplit, download, upload_split
from benchmarks.server import CannedServer, Framing

RESULTS = Path(__file__).parent / "results"
PYTHON = sys.executable
FEED = "bench_feed"
# How each wire name is served: ksqlDB's framing over HTTP/1.1 and h2c, and the old one.
WIRES: dict[str, Framing] = {"h1": "rows", "h2c": "h2c", "large": "large"}


@dataclass
class Outcome:
    dataset: str
    wire: str
    candidate: str
    rows: int
    body_bytes: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    rows_per_s: float
    mb_per_s: float
    files: int
    row_groups: dict[str, int]
    summary: dict[str, Any]


@dataclass
class S3Outcome:
    """One export into an S3 bucket on moto; ``vs_local`` is against lakeexportd's h1 line."""

    dataset: str
    wire: str
    rows: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    rows_per_s: float
    objects: int
    object_mb: float
    upload_mb_per_s: float
    moto_cpu_seconds: float
    vs_local: float | None
    summary: dict[str, Any]


# The child is started by this small launcher, not by the benchmark process: Linux carries a
# process's peak RSS across exec, so a child forked from the benchmark (which grows to several
# hundred MB while DuckDB checks outputs) would report the parent's size as its own peak.
_LAUNCHER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"seconds": time.perf_counter() - started, "code": os.waitstatus_to_exitcode(status),
               "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss}, out)
"""


def run_measured(
    argv: list[str], env: dict[str, str] | None = None
) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS (MB) and stderr of one child."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        proc = subprocess.run([PYTHON, "-c", _LAUNCHER, report.name, *argv], env=env,
                              capture_output=True, check=False)
        err = proc.stderr.decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"launcher for {' '.join(argv)} failed:\n{err[-3000:]}")
        measured = json.loads(Path(report.name).read_text())
    if measured["code"] != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {measured['code']}:\n{err[-3000:]}")
    return measured["seconds"], measured["cpu"], measured["maxrss_kib"] / 1024, err


def lakeexportd_config(url: str, root: Path, path: Path, http2: bool = False,
                       lake: str | None = None) -> Path:
    """A config for the bench feed; ``lake`` replaces the local ``lake:`` section."""
    path.write_text(
        f"ksqldb: {{url: \"{url}\", api: query-stream, max_retries: 0, read_timeout: 600s, "
        f"http2: {str(http2).lower()}}}\n"
        + (lake or f"lake: {{root: \"{root}\"}}\n")
        + f"feeds:\n  - {{name: {FEED}, source: BENCH, kind: stream, settle_delay: 0s}}\n"
    )
    return path


def summarise(out: Path) -> dict[str, Any]:
    import duckdb

    glob = f"{out}/**/*.parquet"
    con = duckdb.connect()
    row = con.sql(
        f"""SELECT count(*), CAST(sum(AMOUNT) AS VARCHAR), count(DISTINCT TRANSACTION_ID),
                   CAST(sum(hash(TRANSACTION_ID)) AS VARCHAR),
                   count(*) FILTER (WHERE CAST(day AS INTEGER) <>
                                    day(make_timestamp(ROWTIME * 1000) AT TIME ZONE 'UTC')),
                   count(DISTINCT filename)
            FROM read_parquet('{glob}', hive_partitioning=true, filename=true)"""
    ).fetchall()[0]
    days = con.sql(
        f"SELECT CAST(day AS INTEGER) d, count(*) FROM read_parquet('{glob}', "
        "hive_partitioning=true) GROUP BY d ORDER BY d"
    ).fetchall()
    groups = con.sql(
        f"SELECT count(*), min(row_group_num_rows), max(row_group_num_rows) FROM "
        f"(SELECT DISTINCT file_name, row_group_id, row_group_num_rows "
        f"FROM parquet_metadata('{glob}'))"
    ).fetchall()[0]
    types = con.sql(
        f"DESCRIBE SELECT AMOUNT, TRANSACTION_TIME FROM read_parquet('{glob}')"
    ).fetchall()
    con.close()
    return {
        "rows": row[0], "sum_amount": row[1], "distinct_ids": row[2], "id_hash_sum": row[3],
        "rows_outside_their_day": row[4], "rows_per_day": [list(d) for d in days],
        "types": [list(t[:2]) for t in types], "files": row[5],
        "row_groups": {"count": groups[0], "min_rows": groups[1], "max_rows": groups[2]},
    }


def run_candidate(name: str, dataset: str, wire: str, rows: int, body: Path, url: str,
                  work: Path) -> Outcome:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    http2 = wire == "h2c"
    if name == "lakeexportd":
        config = lakeexportd_config(url, out / "lake", work / "bench.yaml", http2)
        argv = [PYTHON, "-m", "lakeexportd", "export", "-c", str(config), FEED]
        data_dir = out / "lake" / "streams" / FEED
    else:
        argv = [PYTHON, "-m", "benchmarks.candidates", name, url, str(out),
                *(["h2c"] if http2 else [])]
        data_dir = out
    env = {k: v for k, v in os.environ.items() if k != "LAKEEXPORTD_FAILPOINT"}
    seconds, cpu, rss, _ = run_measured(argv, env)
    summary = summarise(data_dir)
    groups = summary.pop("row_groups")
    size = body.stat().st_size
    shutil.rmtree(out, ignore_errors=True)
    return Outcome(dataset, wire, name, summary["rows"], size, round(seconds, 3), round(cpu, 2),
                   round(rss, 1),
                   round(rows / seconds), round(size / seconds / 1e6, 1), summary.pop("files"),
                   groups, summary)


def run_s3(dataset: str, rows: int, url: str, work: Path, moto: MotoServer, round_: int,
           local_seconds: float | None, keep: Path | None) -> S3Outcome:
    """lakeexportd's export of the h1 body into a fresh bucket; the data objects are downloaded
    (into ``keep`` when given, for ``upload_split``) and summarised like a local output."""
    bucket = f"bench-{round_}-{time.time_ns()}"
    moto.create_bucket(bucket)
    config = lakeexportd_config(url, work, work / "bench-s3.yaml",
                                lake=moto.lake_yaml(bucket, work / "s3-logs"))
    argv = [PYTHON, "-m", "lakeexportd", "export", "-c", str(config), FEED]
    env = {k: v for k, v in os.environ.items() if k != "LAKEEXPORTD_FAILPOINT"} | moto.env()
    moto_before = moto.cpu_seconds()
    seconds, cpu, rss, _ = run_measured(argv, env)
    moto_cpu = moto.cpu_seconds() - moto_before
    out = keep or work / "s3-download"
    shutil.rmtree(out, ignore_errors=True)
    objects, size = download(moto.store(bucket), f"lake/streams/{FEED}", out)
    summary = summarise(out)
    summary.pop("row_groups")
    summary.pop("files")
    if keep is None:
        shutil.rmtree(out, ignore_errors=True)
    return S3Outcome(dataset, "h1", summary["rows"], round(seconds, 3), round(cpu, 2),
                     round(rss, 1), round(rows / seconds), objects, round(size / 1e6, 1),
                     round(size / seconds / 1e6, 1), round(moto_cpu, 2),
                     round(seconds / local_seconds, 2) if local_seconds else None, summary)


def bench_s3(dataset: str, rows: int, body: Path, repeat: int, local: Outcome | None
             ) -> tuple[S3Outcome, UploadSplit]:
    """The best of ``repeat`` S3 exports, then the upload split of its data objects."""
    best: S3Outcome | None = None
    with CannedServer(body, WIRES["h1"]) as server, \
            tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp, MotoServer(Path(tmp)) as moto:
        keep = Path(tmp) / "objects"
        for round_ in range(repeat):
            o = run_s3(dataset, rows, server.url, Path(tmp), moto, round_,
                       local.seconds if local else None, keep if round_ == repeat - 1 else None)
            print(f"  {dataset:<12} h1    lakeexportd s3 {o.seconds:5.2f}s wall "
                  f"{o.cpu_seconds:7.2f}s cpu {o.peak_rss_mb:7.0f} MB moto cpu "
                  f"{o.moto_cpu_seconds:.2f}s load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr, flush=True)
            if local is not None and (o.rows != rows or o.summary != local.summary):
                raise SystemExit(f"{dataset}: the S3 export wrote something else than the local "
                                 f"one:\n{json.dumps(o.summary)}\n{json.dumps(local.summary)}")
            if best is None or o.seconds < best.seconds:
                best = o
        split = upload_split(moto, sorted(keep.rglob("*.parquet")))
    assert best is not None
    return best, split


def s3_table(o: S3Outcome, split: UploadSplit) -> str:
    ratio = f"{o.vs_local:.2f}x" if o.vs_local else "n/a"
    return "\n".join([
        "| dataset      | wire  | store       |      rows | seconds |    rows/s | upload MB/s "
        "| peak RSS MB | vs local | objects | object MB | export CPU s | moto CPU s |",
        "|--------------|-------|-------------|-----------|---------|-----------|-------------"
        "|-------------|----------|---------|-----------|--------------|------------|",
        f"| {o.dataset:<12} | {o.wire:<5} | {'s3 (moto)':<11} | {o.rows:>9,} | {o.seconds:>7.2f} "
        f"| {o.rows_per_s:>9,} | {o.upload_mb_per_s:>11.1f} | {o.peak_rss_mb:>11.0f} "
        f"| {ratio:>8} | {o.objects:>7} | {o.object_mb:>9.1f} | {o.cpu_seconds:>12.2f} "
        f"| {o.moto_cpu_seconds:>10.2f} |",
        "",
        f"upload alone, the same {split.mb} MB in {o.objects} objects one after the other "
        "(obstore open_writer, 8 MiB parts, 4 in flight): "
        f"moto {split.moto_s:.2f} s ({split.mb / split.moto_s:.0f} MB/s), "
        f"LocalStore {split.local_s:.2f} s, MemoryStore {split.memory_s:.2f} s",
    ])


def check_equal(outcomes: list[Outcome], rows: int) -> None:
    reference = outcomes[0].summary
    for o in outcomes:
        if o.rows != rows or o.summary != reference:
            raise SystemExit(
                f"{o.dataset} {o.wire}: {o.candidate} wrote something else than "
                f"{outcomes[0].candidate} {outcomes[0].wire}:"
                f"\n{json.dumps(o.summary)}\n{json.dumps(reference)}"
            )
        if o.summary["rows_outside_their_day"]:
            raise SystemExit(f"{o.dataset}: {o.candidate} put rows in the wrong day")


def bench(dataset: str, wire: str, rows: int, body: Path, candidates: list[str],
          repeat: int) -> list[Outcome]:
    best: dict[str, Outcome] = {}
    with CannedServer(body, WIRES[wire]) as server, \
            tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        # Rounds alternate the candidates, so a busy moment on the machine hits both alike.
        for round_ in range(repeat):
            for name in candidates:
                if name == "naive" and round_:
                    continue  # minutes per run, and never close: once is enough
                o = run_candidate(name, dataset, wire, rows, body, server.url, Path(tmp))
                print(f"  {dataset:<12} {wire:<5} {name:<12} {o.seconds:7.2f}s wall "
                      f"{o.cpu_seconds:7.2f}s cpu {o.peak_rss_mb:7.0f} MB "
                      f"load {os.getloadavg()[0]:.1f}",
                      file=sys.stderr, flush=True)
                if name not in best or o.seconds < best[name].seconds:
                    best[name] = o
    return [best[name] for name in candidates]


def table(outcomes: list[Outcome]) -> str:
    lines = [
        f"| {'dataset':<12} | {'wire':<5} | {'candidate':<11} | {'rows':>9} | {'seconds':>7} "
        f"| {'rows/s':>9} | {'MB/s':>6} | {'peak RSS MB':>11} | {'vs floor':>8} | {'files':>5} "
        f"| {'rows/row group':>14} |",
        f"|{'-' * 14}|{'-' * 7}|{'-' * 13}|{'-' * 11}|{'-' * 9}|{'-' * 11}|{'-' * 8}|{'-' * 13}"
        f"|{'-' * 10}|{'-' * 7}|{'-' * 16}|",
    ]
    # Each row is compared with the floor on the same wire.
    floors = {(o.dataset, o.wire): o.seconds for o in outcomes if o.candidate == "floor"}
    for o in outcomes:
        key = (o.dataset, o.wire)
        ratio = f"{o.seconds / floors[key]:.2f}x" if key in floors else "n/a"
        lines.append(
            f"| {o.dataset:<12} | {o.wire:<5} | {o.candidate:<11} | {o.rows:>9,} "
            f"| {o.seconds:>7.2f} "
            f"| {o.rows_per_s:>9,} | {o.mb_per_s:>6.1f} | {o.peak_rss_mb:>11.0f} "
            f"| {ratio:>8} | {o.files:>5} | {o.rows // max(o.row_groups['count'], 1):>14,} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200k flat rows only")
    parser.add_argument("--sizes", type=int, nargs="*", help="flat row counts (default 1M 5M)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of lakeexportd and the floor; the best counts (default 2)")
    parser.add_argument("--naive-max", type=int, default=1_000_000,
                        help="largest N the naive export runs at (it holds every row as "
                             "Python objects)")
    parser.add_argument("--no-nested", action="store_true")
    parser.add_argument("--no-s3", action="store_true",
                        help="skip the export into moto's S3 server (smallest size, h1)")
    parser.add_argument("--wires", choices=list(WIRES), nargs="+",
                        help="framings (default: h1 and h2c at every size, large at the "
                             "smallest flat size)")
    parser.add_argument("--only", choices=["lakeexportd", "floor", "naive"], action="append",
                        help="run only these candidates (repeatable; skips the output check)")
    args = parser.parse_args(argv)
    sizes = [200_000] if args.quick else (args.sizes or [1_000_000, 5_000_000])
    outcomes: list[Outcome] = []
    s3: tuple[S3Outcome, UploadSplit] | None = None
    started = time.perf_counter()
    for n in sizes:
        body = flat_body(n)
        wires = args.wires or ["h1", "h2c"] + (["large"] if n == min(sizes) else [])
        flat: list[Outcome] = []
        for wire in wires:
            candidates = ["lakeexportd", "floor"]
            if n <= args.naive_max and wire == "h1":  # http.client: HTTP/1.1 only
                candidates.append("naive")
            candidates = [c for c in candidates if not args.only or c in args.only]
            flat += bench(f"flat {n // 1000}k", wire, n, body, candidates, args.repeat)
        check_equal(flat, n)
        outcomes += flat
        if n == min(sizes) and "h1" in wires and not args.no_s3:
            local = next((o for o in flat if o.candidate == "lakeexportd" and o.wire == "h1"),
                         None)
            s3 = bench_s3(f"flat {n // 1000}k", n, body, args.repeat, local)
    if not args.quick and not args.no_nested:
        n = 200_000
        # No floor or naive here: a native reader for nested ksqlDB rows is what is missing
        # (lakeexportd takes its exact JSON path), and pandas cannot write these types as is.
        for wire in args.wires or ["h1", "h2c"]:
            outcomes += bench(f"nested {n // 1000}k", wire, n, nested_body(n), ["lakeexportd"],
                              1)
    text = table(outcomes)
    if s3 is not None:
        text += "\n\nS3 (moto's server on 127.0.0.1), beside lakeexportd's local h1 line:\n\n"
        text += s3_table(*s3)
    print(text)
    stamp = dt.datetime.now(dt.UTC)
    doc = {
        "created": stamp.isoformat(timespec="seconds"),
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None
                                                          else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "total_seconds": round(time.perf_counter() - started, 1),
        "results": [asdict(o) for o in outcomes],
        "s3": {"export": asdict(s3[0]), "upload_split": asdict(s3[1])} if s3 else None,
        "table": text.splitlines(),
    }
    doc["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    for name in (f"{stamp:%Y%m%dT%H%M%SZ}.json", "latest.json"):
        (RESULTS / name).write_text(json.dumps(doc, indent=1) + "\n")
    # The same figures for people: wire h1 = one HTTP/1.1 chunk per row, h2c = one HTTP/2
    # DATA frame per row (ksqlDB's framing), large = 4 MiB chunks.
    (RESULTS / "latest.md").write_text(
        f"# make bench, {doc['created']}\n\n`{doc['command']}` on {os.cpu_count()} CPUs, "
        f"{doc['total_seconds']} s in all, load average at the end "
        f"{doc['load_average_at_end']}.\nWires: h1 = one HTTP/1.1 chunk per row and h2c = one "
        "HTTP/2 DATA frame per row (as ksqlDB 0.29 sends them), large = 4 MiB chunks. "
        "Best of the rounds; 'vs floor' is against the floor on the same wire.\n\n"
        f"{text}\n")


if __name__ == "__main__":
    main()
