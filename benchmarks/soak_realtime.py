"""``make soak-realtime``: the daemon with 20 realtime feeds, steady traffic plus a burst.

Runs the real processes (``lakeexportd sandbox`` and ``lakeexportd run``) on free 127.0.0.1
ports. 20 ``mode: realtime`` feeds (``rotate: {age: 5s, idle: 2s}``), each its own push query
and its own lake folder, 5 on each of TRANSACTION_STREAM (nested), TRANSACTION_FLATTENED,
TRANSACTION_ANONYMIZED and WIDE_DECIMALS (DECIMAL(38, 10) and (76, 20)); the first feed of
each TRANSACTION_* stream is Delta (WIDE_DECIMALS' DECIMAL(76, 20) has no Delta type), the
rest Parquet.

Rates are rows into the lakes, summed over the feeds: every feed reads every row of its
stream, so the sandbox makes ``--rate / 20`` base transactions per second (each one row in all
four streams) for ``--minutes`` (default 10: 2,000 rows/s in total = 100 transactions/s), and
``--burst-rate / 20`` per second for ``--burst-seconds`` starting ``--burst-at`` seconds in
(default 50,000 rows/s = 2,500 transactions/s for 30 s, from 180 s). Rows owed are made
every 100 ms (``POST /_sandbox/generate``); when the sandbox answers late, the next request
catches up, so the burst's rows are all made even when the sandbox (Python, one event loop
that also serves the 20 push queries) cannot make them that fast: the rate it reached is
reported. The burst is a backlog the daemon takes at the pace ksqlDB sends it: back-pressure
(bounded read-ahead, TCP flow control) must keep the daemon's memory flat while it drains.

Every 10 s the daemon's RSS (``/proc/<pid>/status`` VmRSS), open file descriptors
(``/proc/<pid>/fd``) and CPU, and the sandbox's, are sampled from /proc (a thread of their
own, so a slow server never delays them); as often as the servers answer, the rows not yet
committed (sandbox rows minus the rows each feed committed, from ``/status``) and the largest
``lakeexportd_realtime_lag_seconds``.
When the traffic ends, the feeds are given up to ``--drain-timeout`` seconds to commit every
row, the daemon gets SIGTERM, and every feed's lake (Parquet: the files ``_metadata.json``
lists; Delta: the table read with ``deltalake``) is checked against a stream pull of the
sandbox: each row exactly once, none missing, none extra. Prints a summary and writes
``benchmarks/results/soak_realtime_latest.json``. Not part of ``make test``.

    python -m benchmarks.soak_realtime                                   # ~10 min + drain
    python -m benchmarks.soak_realtime --minutes 2 --burst-at 30 --burst-seconds 10   # short
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import yaml
from deltalake import DeltaTable
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.realtime_latency import Watch, produce
from benchmarks.soak import free_port, wait_ready
from lakeexportd.audit.verify import verify_feed
from lakeexportd.audit.verify_delta import verify_delta_feed
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.lake.storage import LOCAL

# Every base transaction is one row in each of these streams; their key columns.
STREAMS = {"TRANSACTION_STREAM": "TRANSACTION_ID", "TRANSACTION_FLATTENED": "TRANSACTION_ID",
           "TRANSACTION_ANONYMIZED": "TRANSACTION_ID", "WIDE_DECIMALS": "ID"}
PER_STREAM = 5
RESULTS = Path(__file__).parent / "results"
EXE = str(Path(sys.executable).with_name("lakeexportd"))


def feeds(age: str, idle: str) -> list[dict[str, Any]]:
    out = []
    for source in STREAMS:
        for copy in range(PER_STREAM):
            out.append({"name": f"{source.lower()}_{copy}", "source": source, "kind": "stream",
                        "mode": "realtime",
                        "format": "delta" if copy == 0 and source != "WIDE_DECIMALS"
                        else "parquet",
                        "rotate": {"age": age, "idle": idle}})
    return out


def proc_sample(pid: int) -> tuple[float, int, float]:
    """RSS (MB), open file descriptors and CPU seconds (user + system) of a process."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd")), cpu


def sample_procs(daemon: int, sandbox: int, began: float, every: float,
                 out: list[dict[str, Any]], stop: threading.Event) -> None:
    """Every ``every`` s: both processes' RSS, file descriptors and CPU use since the last."""
    last: tuple[float, float, float] | None = None
    while True:
        now = time.time()
        rss, fds, cpu = proc_sample(daemon)
        sb_rss, _, sb_cpu = proc_sample(sandbox)
        entry: dict[str, Any] = {"t": round(now - began, 1), "rss_mb": round(rss, 1),
                                 "fds": fds, "sandbox_rss_mb": round(sb_rss, 1)}
        if last is not None:
            entry["cpu_pct"] = round(100 * (cpu - last[1]) / (now - last[0]))
            entry["sandbox_cpu_pct"] = round(100 * (sb_cpu - last[2]) / (now - last[0]))
        last = (now, cpu, sb_cpu)
        out.append(entry)
        print(f"  t={entry['t']:6.0f}s  daemon rss={rss:6.1f} MB fds={fds:3d} "
              f"cpu={entry.get('cpu_pct', '-')}%  sandbox rss={sb_rss:6.1f} MB "
              f"cpu={entry.get('sandbox_cpu_pct', '-')}%", flush=True)
        if stop.wait(max(0.0, every - (time.time() - began) % every)):
            return


def max_lag(metrics: str) -> float | None:
    text = httpx.get(f"{metrics}/metrics", timeout=30).text
    lags = [s.value for family in text_string_to_metric_families(text)
            if family.name == "lakeexportd_realtime_lag_seconds" for s in family.samples]
    return max(lags) if lags else None


def lake_ids(lake: Path, feed: dict[str, Any]) -> list[str]:
    """Key values of every row the feed's lake holds, read without lakeexportd."""
    folder = lake / "streams" / feed["name"]
    key = STREAMS[feed["source"]]
    if feed["format"] == "delta":
        return list(DeltaTable(str(folder)).to_pyarrow_table(columns=[key]).column(0).to_pylist())
    doc = json.loads((folder / "_metadata.json").read_bytes())
    ids: list[str] = []
    for part in doc.get("partitions", []):
        for entry in part.get("files", []):
            path = folder / part["path"] / entry["name"]
            ids += pq.read_table(path, columns=[key]).column(0).to_pylist()
    return ids


def truth(ksqldb: str) -> dict[str, list[str]]:
    """Every stream's keys, from a stream pull of the sandbox."""
    client = KsqlDBClient(CurlTransport(ksqldb, read_timeout=600), api="query-stream")
    out: dict[str, list[str]] = {}
    try:
        for source, key in STREAMS.items():
            ids: list[str] = []
            with client.query(f"SELECT {key} FROM {source};") as result:
                for batch in result.batches():
                    ids += batch.column(0).to_pylist()
            out[source] = ids
    finally:
        client.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="traffic duration")
    parser.add_argument("--rate", type=float, default=2000.0,
                        help="steady rows/s into the lakes, summed over the 20 feeds")
    parser.add_argument("--burst-rate", type=float, default=50_000.0,
                        help="rows/s into the lakes during the burst, summed over the feeds")
    parser.add_argument("--burst-at", type=float, default=180.0, help="s after the start")
    parser.add_argument("--burst-seconds", type=float, default=30.0)
    parser.add_argument("--age", default="5s", help="rotate.age of every feed")
    parser.add_argument("--idle", default="2s", help="rotate.idle of every feed")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--drain-timeout", type=float, default=900.0,
                        help="after the traffic: how long the feeds may take to commit all")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="lakeexportd-soak-realtime-"))
    sandbox_port, metrics_port = free_port(), free_port()
    ksqldb, metrics = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{metrics_port}"
    config = feeds(args.age, args.idle)
    fan_out = len(config)  # every feed reads every row of its stream
    (work / "soak.yaml").write_text(yaml.safe_dump({
        "ksqldb": {"url": ksqldb},
        "lake": {"root": str(work / "lake")},
        "scheduler": {"stop_grace": "120s"},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "feeds": config,
    }))
    burst_end = args.burst_at + args.burst_seconds

    def transactions_by(elapsed: float) -> float:
        """Base transactions owed ``elapsed`` s into the traffic (burst included)."""
        in_burst = min(max(0.0, elapsed - args.burst_at), args.burst_seconds)
        return (args.rate * elapsed + (args.burst_rate - args.rate) * in_burst) / fan_out

    with open(work / "sandbox.stderr", "wb") as err:
        sandbox = subprocess.Popen([EXE, "sandbox", "--port", str(sandbox_port), "--seed", "1"],
                                   stdout=subprocess.DEVNULL, stderr=err,
                                   start_new_session=True)
    daemon: subprocess.Popen[bytes] | None = None
    watch = Watch()
    procs: list[dict[str, Any]] = []
    progress: list[dict[str, Any]] = []
    phases: dict[str, float] = {}
    sampler: threading.Thread | None = None

    def look(began: float) -> dict[str, Any] | None:
        """Rows not committed yet, the largest lag, the queries' states (None: a server did
        not answer within a minute; the sandbox's admin paths share its one event loop with
        the push queries it is serving)."""
        try:
            status = httpx.get(f"{metrics}/status", timeout=60).json()["feeds"]
            counts = httpx.get(f"{ksqldb}/_sandbox/stats", timeout=60).json()["counts"]
            lag = max_lag(metrics)
        except httpx.TimeoutException as exc:
            print(f"  t={time.time() - began:6.0f}s  no answer within 60 s ({exc!r})", flush=True)
            return None
        queries = {f["name"]: status[f["name"]].get("query", {}) for f in config}
        behind = sum(counts[f["source"]] - (queries[f["name"]].get("rows") or 0)
                     for f in config)
        states: dict[str, int] = {}
        for q in queries.values():
            states[q.get("state", "?")] = states.get(q.get("state", "?"), 0) + 1
        now = {"t": round(time.time() - began, 1),
               "rows_made": sum(counts[s] for s in STREAMS) * PER_STREAM,
               "rows_behind": behind, "max_lag_s": lag, "states": states,
               "reconnects": sum(q.get("reconnects") or 0 for q in queries.values())}
        print(f"  t={now['t']:6.0f}s  rows made {now['rows_made']:>9,}  not committed "
              f"{behind:>9,}  max lag {'-' if lag is None else f'{lag:.1f}'} s  {states}",
              flush=True)
        return now

    try:
        wait_ready(f"{ksqldb}/healthcheck", sandbox, "sandbox")
        with open(work / "daemon.stderr", "wb") as err:
            daemon = subprocess.Popen([EXE, "run", "-c", str(work / "soak.yaml")], stderr=err,
                                      stdout=subprocess.DEVNULL, start_new_session=True)
        wait_ready(f"{metrics}/readyz", daemon, "daemon")
        print(f"{len(config)} realtime feeds; traffic {args.rate:,.0f} rows/s into the lakes "
              f"for {args.minutes:g} min, {args.burst_rate:,.0f} rows/s from "
              f"{args.burst_at:g} s for {args.burst_seconds:g} s; lake and logs in {work}",
              flush=True)
        began = time.time()
        sampler = threading.Thread(target=sample_procs, args=(
            daemon.pid, sandbox.pid, began, args.sample, procs, watch.stop))
        sampler.start()
        producer = threading.Thread(target=produce, args=(
            ksqldb, transactions_by, began + args.minutes * 60, watch))
        producer.start()
        while producer.is_alive():
            if (seen := look(began)) is not None:
                progress.append(seen)
            producer.join(max(0.0, args.sample - (time.time() - began) % args.sample))
        phases["traffic_end"] = time.time() - began
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline:
            if (seen := look(began)) is not None:
                progress.append(seen)
                if seen["rows_behind"] == 0:
                    break
            time.sleep(min(2.0, args.sample))
        phases["caught_up"] = time.time() - began
        scrape = httpx.get(f"{metrics}/metrics", timeout=30).text
        time.sleep(max(0.0, args.sample - (time.time() - began) % args.sample) + 0.5)
        watch.stop.set()
        sampler.join()
        daemon.send_signal(signal.SIGTERM)
        exit_code = daemon.wait(180)
        phases["stopped"] = time.time() - began
        ground = truth(ksqldb)
    finally:
        watch.stop.set()
        for p in (daemon, sandbox):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)

    checks: dict[str, dict[str, Any]] = {}
    for feed in config:
        ids = lake_ids(work / "lake", feed)
        want = set(ground[feed["source"]])
        have = set(ids)
        # lakeexportd's own audit, as `lakeexportd verify` runs it: Delta feeds against the log.
        problems = [str(p) for p in (
            verify_delta_feed(work / "lake", "stream", feed["name"], storage=LOCAL)
            if feed["format"] == "delta" else verify_feed(work / "lake", "stream", feed["name"]))]
        checks[feed["name"]] = {
            "format": feed["format"], "rows": len(ids), "expected": len(want),
            "duplicates": len(ids) - len(have), "missing": len(want - have),
            "extra": len(have - want), "consistent": not problems, "problems": problems[:5]}
    commits = sum(float(line.rsplit(" ", 1)[1]) for line in scrape.splitlines()
                  if line.startswith("lakeexportd_realtime_commits_total{"))
    # Warmed up (the first commits of every feed behind it) and before the burst.
    before = [s for s in procs if min(60, args.burst_at / 2) <= s["t"] < args.burst_at] \
        or procs[:2]
    burst_and_drain = [s for s in procs if args.burst_at <= s["t"]]
    # Drained: after the burst, the backlog back within 1.5 times its largest before it.
    steady_backlog = max((p["rows_behind"] for p in progress if 30 <= p["t"] < args.burst_at),
                         default=args.rate * 10)
    drained = next((p["t"] for p in progress if p["t"] > burst_end
                    and p["rows_behind"] <= 1.5 * steady_backlog), None)
    after = [s for s in procs if drained is not None and s["t"] >= drained + 30]
    made_in_burst = sum(n for t, n, _ in watch.batches
                        if began + args.burst_at <= t < began + burst_end)
    # The burst's rows are made by requests far larger than the steady ones (a tick's worth).
    burst_made_s = max((t - began for t, n, _ in watch.batches
                        if t - began >= args.burst_at and n > 20 * args.rate / fan_out * 0.1),
                       default=burst_end) - args.burst_at
    summary = {
        "command": " ".join(["python -m benchmarks.soak_realtime", *(argv or sys.argv[1:])]),
        "minutes": args.minutes, "rate": args.rate, "burst_rate": args.burst_rate,
        "burst_at": args.burst_at, "burst_seconds": args.burst_seconds, "feeds": len(config),
        "formats": {f: sum(c["format"] == f for c in config) for f in ("parquet", "delta")},
        "rotate": {"age": args.age, "idle": args.idle},
        "transactions_made": len(ground["TRANSACTION_STREAM"]),
        "rows_expected_in_lakes": sum(c["expected"] for c in checks.values()),
        "rows_in_lakes": sum(c["rows"] for c in checks.values()),
        "duplicates": sum(c["duplicates"] for c in checks.values()),
        "missing": sum(c["missing"] for c in checks.values()),
        "extra": sum(c["extra"] for c in checks.values()),
        "feeds_consistent": all(c["consistent"] for c in checks.values()),
        "daemon_exit": exit_code, "commits": commits,
        "reconnects": progress[-1]["reconnects"] if progress else None,
        # The rows into the lakes the sandbox made per second in the burst window (it catches
        # up after the window when it was slower), and how long making the burst's rows took.
        "burst_rows_per_s_in_window": round(made_in_burst * fan_out / args.burst_seconds),
        "burst_rows_made_within_s": round(burst_made_s, 1),
        "burst_backlog_peak_rows": max((p["rows_behind"] for p in progress
                                        if p["t"] >= args.burst_at), default=None),
        "burst_max_lag_s": max((p["max_lag_s"] or 0 for p in progress
                                if p["t"] >= args.burst_at), default=None),
        "steady_backlog_max_rows": steady_backlog,
        "backlog_drained_at_s": drained,
        "traffic_end_s": round(phases["traffic_end"], 1),
        "all_committed_at_s": round(phases["caught_up"], 1),
        "rss_mb": {"start": procs[0]["rss_mb"],
                   "before_burst_median": statistics.median(s["rss_mb"] for s in before),
                   "peak": max(s["rss_mb"] for s in procs),
                   "peak_burst_and_drain": max((s["rss_mb"] for s in burst_and_drain),
                                               default=None),
                   "after_drain_median": statistics.median(s["rss_mb"] for s in after)
                   if after else None,
                   "end": procs[-1]["rss_mb"]},
        "fds": {"start": procs[0]["fds"],
                "before_burst_median": statistics.median(s["fds"] for s in before),
                "peak": max(s["fds"] for s in procs), "end": procs[-1]["fds"]},
        "sandbox_rss_mb": {"start": procs[0]["sandbox_rss_mb"],
                           "end": procs[-1]["sandbox_rss_mb"]},
        "per_feed": checks,
        "procs": procs,
        "progress": progress,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak_realtime_latest.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items()
                      if k not in ("per_feed", "procs", "progress")}, indent=2))
    ok = (exit_code == 0 and summary["duplicates"] == 0 and summary["missing"] == 0
          and summary["extra"] == 0 and summary["feeds_consistent"])
    print("soak (realtime):", "PASSED" if ok else "FAILED", f"(lake and logs in {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
