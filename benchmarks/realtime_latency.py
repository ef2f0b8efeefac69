"""``make bench-realtime``: how soon a realtime feed has a sandbox row in a committed file.

Runs the real processes: ``lakeexportd sandbox`` and ``lakeexportd run`` with one
``mode: realtime`` feed (``rotate: {age: 5s, idle: 2s}`` by default), on free 127.0.0.1 ports.
This script is the producer: every 100 ms it asks the sandbox for the rows owed at ``--rate``
(``POST /_sandbox/generate``, what ``lakeexportd sandbox --rate`` does on its own tick, with
ROWTIME = the sandbox's wall clock when the row is made), so it can also stop the traffic.

* Commit time of a file: when it first appears listed in the feed's ``_metadata.json``,
  which is read every ``--poll`` seconds (the ``exports[].finished`` stamps are whole
  seconds). The daemon's ``realtime.committed`` log lines are matched to them by row counts
  and their exact timestamps are used when every commit matches (otherwise the poll times).
* Latency of a row: its file's commit time minus its ROWTIME. About 3 % of sandbox rows are
  made with a ROWTIME pulled back by up to ``--max-disorder-ms`` (late rows: 5 s by default);
  for them "produced at" is the ROWTIME of the rows made with them (the running maximum of
  ROWTIME in the order the rows were made), and both figures are printed.
* Steady state: rows produced during ``--seconds`` after ``--warmup`` seconds of traffic.
  Then the traffic stops and the time until the last row is committed is measured (``idle``
  plus at most one rotation check: the feed looks at its rules every 250 ms).
* ``lakeexportd_realtime_lag_seconds`` is scraped from ``/metrics`` every second.
* Every row the sandbox made is checked to be in the lake exactly once (a stream pull of the
  sandbox, not the lake's own bookkeeping, is the ground truth).

Prints a markdown table and writes ``benchmarks/results/realtime_latency.md`` and
``realtime_latency_latest.json`` (``realtime_latency_delta.*`` with ``--format delta``).
Not part of ``make test``.

    python -m benchmarks.realtime_latency                 # 10 s warm-up + 60 s at 2,000 rows/s
    python -m benchmarks.realtime_latency --seconds 20    # quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pyarrow.parquet as pq
import yaml
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.soak import free_port, wait_ready
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.lake import layout

RESULTS = Path(__file__).parent / "results"
FEED = "rt"
EXE = str(Path(sys.executable).with_name("lakeexportd"))


@dataclass
class Watch:
    """What the side threads record while the benchmark runs."""

    first_seen: dict[str, float] = field(default_factory=dict)  # "dir/name" -> epoch s
    lag: list[tuple[float, float]] = field(default_factory=list)  # (epoch s, lag_seconds)
    # (epoch s, rows made, seconds the request took) per request to the sandbox
    batches: list[tuple[float, int, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)


def poll_lake(feed_dir: Path, watch: Watch, every: float) -> None:
    """Record when each file first appears listed in ``_metadata.json``."""
    path = feed_dir / "_metadata.json"
    while not watch.stop.is_set():
        now = time.time()
        try:
            doc = json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):  # not there yet, or replaced under us
            doc = {}
        for part in doc.get("partitions", []):
            for entry in part.get("files", []):
                watch.first_seen.setdefault(f"{part['path']}/{entry['name']}", now)
        watch.stop.wait(max(0.0, every - (time.time() - now)))


def listed_rows(feed_dir: Path) -> int:
    try:
        doc = json.loads((feed_dir / "_metadata.json").read_bytes())
    except (FileNotFoundError, ValueError):
        return 0
    return sum(f["records"] for p in doc.get("partitions", []) for f in p.get("files", []))


def scrape_lag(metrics: str, watch: Watch) -> None:
    with httpx.Client(timeout=5) as client:
        while not watch.stop.wait(1.0):
            try:
                text = client.get(f"{metrics}/metrics").text
            except httpx.TransportError as exc:
                watch.errors.append(f"scrape: {exc}")
                continue
            for family in text_string_to_metric_families(text):
                if family.name == "lakeexportd_realtime_lag_seconds":
                    for sample in family.samples:
                        if sample.labels.get("feed") == FEED:
                            watch.lag.append((time.time(), sample.value))


def produce(ksqldb: str, rate: float | Callable[[float], float], until: float, watch: Watch,
            tick: float = 0.1) -> None:
    """Make rows until the epoch time ``until``: ``rate`` per second, or ``rate(s)`` rows in
    all by ``s`` seconds after the start. Paced like the sandbox's own ``--rate`` loop: every
    ``tick`` seconds the rows owed are made (``POST /_sandbox/generate``: ROWTIME = the
    sandbox's clock then); a request that took long is caught up at the next one."""
    owed_by = rate if callable(rate) else (lambda elapsed: float(rate) * elapsed)
    made, first = 0, time.monotonic()
    # No timeout: a busy sandbox answers late, and a request given up on may still be run.
    with httpx.Client(base_url=ksqldb, timeout=None) as client:
        while time.time() < until and not watch.stop.is_set():
            time.sleep(max(0.0, tick - (time.monotonic() - first) % tick))
            due = int(owed_by(time.monotonic() - first)) - made
            if due > 0:
                sent = time.monotonic()
                answer = client.post("/_sandbox/generate", json={"rows": due}).json()
                made += answer["generated"]
                watch.batches.append((time.time(), answer["generated"], time.monotonic() - sent))


def committed_lines(stderr: Path) -> list[dict[str, Any]]:
    out = []
    for line in stderr.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "realtime.committed":
                out.append(event)
    return out


def ground_truth(ksqldb: str, source: str) -> tuple[list[str], np.ndarray]:
    """TRANSACTION_ID and ROWTIME of every row of ``source``, in the order they were made."""
    client = KsqlDBClient(CurlTransport(ksqldb, read_timeout=600), api="query-stream")
    ids: list[str] = []
    rowtimes: list[int] = []
    try:
        with client.query(f"SELECT TRANSACTION_ID, ROWTIME FROM {source};") as result:
            for batch in result.batches():
                ids += batch.column(0).to_pylist()
                rowtimes += batch.column(1).to_pylist()
    finally:
        client.close()
    order = np.argsort(np.array([int(i.rsplit("_", 1)[1]) for i in ids]), kind="stable")
    return [ids[i] for i in order], np.asarray(rowtimes, dtype=np.int64)[order]


def pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="rows per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="steady traffic measured")
    parser.add_argument("--warmup", type=float, default=10.0, help="traffic before that")
    parser.add_argument("--age", default="5s", help="rotate.age")
    parser.add_argument("--idle", default="2s", help="rotate.idle")
    parser.add_argument("--source", default="TRANSACTION_STREAM")
    parser.add_argument("--format", default="parquet", choices=["parquet", "delta"])
    parser.add_argument("--poll", type=float, default=0.1, help="lake poll period (s)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="lakeexportd-rt-latency-"))
    sandbox_port, metrics_port = free_port(), free_port()
    ksqldb, metrics = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{metrics_port}"
    lake = work / "lake"
    feed_dir = layout.feed_dir(lake, "stream", FEED)
    config = work / "realtime.yaml"
    config.write_text(yaml.safe_dump({
        "ksqldb": {"url": ksqldb},
        "lake": {"root": str(lake)},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "feeds": [{"name": FEED, "source": args.source, "kind": "stream", "mode": "realtime",
                   "format": args.format, "rotate": {"age": args.age, "idle": args.idle}}],
    }))
    sandbox = subprocess.Popen([EXE, "sandbox", "--port", str(sandbox_port), "--seed", "1"],
                               stdout=subprocess.DEVNULL, start_new_session=True)
    daemon: subprocess.Popen[bytes] | None = None
    watch = Watch()
    threads: list[threading.Thread] = []
    try:
        wait_ready(f"{ksqldb}/healthcheck", sandbox, "sandbox")
        with open(work / "daemon.stderr", "wb") as err:
            daemon = subprocess.Popen([EXE, "run", "-c", str(config)], stderr=err,
                                      stdout=subprocess.DEVNULL, start_new_session=True)
        wait_ready(f"{metrics}/readyz", daemon, "daemon")
        deadline = time.monotonic() + 60
        while httpx.get(f"{metrics}/status", timeout=30).json()["feeds"][FEED].get("query", {}).get(
                "state") != "running":
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit(f"the feed's push query did not start (see {work})")
            time.sleep(0.1)
        threads = [threading.Thread(target=poll_lake, args=(feed_dir, watch, args.poll)),
                   threading.Thread(target=scrape_lag, args=(metrics, watch))]
        for t in threads:
            t.start()
        began = time.time()
        steady_from, stop_at = began + args.warmup, began + args.warmup + args.seconds
        print(f"traffic: {args.rate:,.0f} rows/s for {args.warmup + args.seconds:.0f} s "
              f"(the last {args.seconds:.0f} s measured); lake and logs in {work}", flush=True)
        produce(ksqldb, args.rate, stop_at, watch)
        stopped = time.time()
        made = httpx.get(f"{ksqldb}/_sandbox/stats", timeout=60).json()["counts"][args.source]
        # Until every row made is listed (or a minute: then the check below reports them).
        deadline = time.monotonic() + 60
        while listed_rows(feed_dir) < made and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(max(1.5, 2 * args.poll))  # the poller and the scraper see the end too
        watch.stop.set()
        for t in threads:
            t.join()
        cpu = {name: sum(psutil.Process(p.pid).cpu_times()[:2])
               for name, p in (("sandbox", sandbox), ("daemon", daemon))}
        daemon.send_signal(signal.SIGTERM)
        daemon_exit = daemon.wait(120)
        ids, rowtimes = ground_truth(ksqldb, args.source)
    finally:
        watch.stop.set()
        for p in (daemon, sandbox):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)

    # -- the lake's rows, each with its file's commit time ---------------------------------
    lake_ids: list[str] = []
    commit_s: list[float] = []
    file_rows: dict[float, int] = {}
    for rel, seen in sorted(watch.first_seen.items(), key=lambda kv: kv[1]):
        column = pq.read_table(feed_dir / rel, columns=["TRANSACTION_ID"]).column(0).to_pylist()
        lake_ids += column
        commit_s += [seen] * len(column)
        file_rows[seen] = file_rows.get(seen, 0) + len(column)
    # The daemon's own commit times: one realtime.committed line per rotation.
    commits = committed_lines(work / "daemon.stderr")
    logged = [(dt.datetime.fromisoformat(c["timestamp"].replace("Z", "+00:00")).timestamp(),
               int(c["rows"])) for c in commits if c.get("feed") == FEED and c["rows"]]
    polled = sorted(file_rows.items())
    matched = len(logged) == len(polled) and all(
        lr == pr for (_, lr), (_, pr) in zip(logged, polled))
    poll_minus_log = np.array([p - lt for (lt, _), (p, _) in zip(logged, polled)]) \
        if matched else np.array([])
    if matched:
        exact = {p: lt for (lt, _), (p, _) in zip(logged, polled)}
        commit_s = [exact[c] for c in commit_s]

    index = {tid: i for i, tid in enumerate(ids)}
    positions = np.array([index.get(t, -1) for t in lake_ids], dtype=np.int64)
    duplicates = len(lake_ids) - len(set(lake_ids))
    missing = len(set(ids) - set(lake_ids))
    extra = int((positions < 0).sum())
    known = positions >= 0
    commit = np.asarray(commit_s)[known]
    rt = rowtimes[positions[known]] / 1000.0
    produced_all = np.maximum.accumulate(rowtimes) / 1000.0  # late rows: when made
    produced = produced_all[positions[known]]
    steady = (produced >= steady_from) & (produced < stop_at)
    lat_rowtime = commit[steady] - rt[steady]
    lat_made = commit[steady] - produced[steady]
    last_commit = max(watch.first_seen.values()) if watch.first_seen else float("nan")
    if matched and logged:
        last_commit = logged[-1][0]
    last_made = float(produced_all[-1]) if len(produced_all) else float("nan")
    lag_steady = np.array([v for t, v in watch.lag if steady_from <= t < stop_at])
    lag_after = [(round(t - stopped, 1), round(v, 2)) for t, v in watch.lag if t >= stopped]
    rate_seen = sum(n for t, n, _ in watch.batches if steady_from <= t < stop_at) / args.seconds
    whole = int(args.warmup + args.seconds)  # whole seconds of traffic (not the last part)
    per_second = np.bincount(np.array([int(t - began) for t, _, _ in watch.batches], dtype=int),
                             weights=[n for _, n, _ in watch.batches], minlength=whole)[:whole]
    post_s = np.array([d for _, _, d in watch.batches])

    def row(name: str, values: np.ndarray) -> str:
        return (f"| {name} | {len(values):,} | {pct(values, 50):.2f} | {pct(values, 95):.2f} | "
                f"{pct(values, 99):.2f} | {values.max() if len(values) else float('nan'):.2f} |")

    table = "\n".join([
        f"Realtime feed `{FEED}` on {args.source} ({args.format}), `rotate: {{age: {args.age}, "
        f"idle: {args.idle}}}`, sandbox traffic {rate_seen:,.0f} rows/s measured over "
        f"{args.seconds:.0f} s after a {args.warmup:.0f} s warm-up; "
        f"{len(polled)} commits in all; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores.",
        "",
        "| latency (s) | rows | p50 | p95 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
        row("commit - ROWTIME", lat_rowtime),
        row("commit - produced (late rows at their making)", lat_made),
        "",
        "| after the traffic stops | s |",
        "|---|---:|",
        f"| last row made -> its commit (`idle` is {args.idle}) | {last_commit - last_made:.2f} |",
        f"| traffic stopped -> last commit | {last_commit - stopped:.2f} |",
        "",
        "| `lakeexportd_realtime_lag_seconds` | value |",
        "|---|---:|",
        f"| steady: samples | {len(lag_steady)} |",
        f"| steady: min / median / p95 / max | {pct(lag_steady, 0):.2f} / "
        f"{pct(lag_steady, 50):.2f} / {pct(lag_steady, 95):.2f} / {pct(lag_steady, 100):.2f} |",
        f"| after the stop (s after: value) | "
        f"{', '.join(f'{t:g}: {v:g}' for t, v in lag_after[:6])} |",
        "",
        f"Traffic: rows made per second of traffic min {per_second.min():,.0f}, median "
        f"{np.median(per_second):,.0f}, max {per_second.max():,.0f}; a generate request took "
        f"{pct(post_s, 50) * 1000:.0f} ms at the median, {pct(post_s, 99) * 1000:.0f} ms at "
        f"p99, {post_s.max() * 1000:.0f} ms at most. CPU seconds over the run: sandbox "
        f"{cpu['sandbox']:.1f}, daemon {cpu['daemon']:.1f} (load average "
        f"{os.getloadavg()[0]:.1f} at the end).",
        "",
        f"Rows made {len(ids):,}, in the lake {len(lake_ids):,}: duplicates {duplicates}, "
        f"missing {missing}, not made by the sandbox {extra}. Commit times: "
        + (f"the daemon's realtime.committed log stamps (the {args.poll:g} s lake poll saw "
           f"each commit {pct(poll_minus_log, 50) * 1000:.0f} ms later at the median, "
           f"{pct(poll_minus_log, 100) * 1000:.0f} ms at most)." if matched else
           f"first seen by the {args.poll:g} s lake poll (the log's commits did not match "
           f"them one to one: {len(logged)} logged, {len(polled)} seen)."),
    ])
    print()
    print(table)
    ok = (daemon_exit == 0 and duplicates == 0 and missing == 0 and extra == 0
          and pct(lat_rowtime, 95) < 10.0)
    summary = {
        "command": " ".join(["python -m benchmarks.realtime_latency", *(argv or sys.argv[1:])]),
        "rate": rate_seen, "seconds": args.seconds, "warmup": args.warmup, "age": args.age,
        "idle": args.idle, "format": args.format, "commits": len(polled),
        "latency_vs_rowtime": {q: pct(lat_rowtime, q) for q in (50, 95, 99, 100)},
        "latency_vs_made": {q: pct(lat_made, q) for q in (50, 95, 99, 100)},
        "last_row_to_commit_s": last_commit - last_made,
        "stop_to_last_commit_s": last_commit - stopped,
        "lag_seconds_steady": lag_steady.tolist(), "lag_seconds_after_stop": lag_after,
        "rows_made": len(ids), "rows_in_lake": len(lake_ids), "duplicates": duplicates,
        "missing": missing, "extra": extra, "daemon_exit": daemon_exit,
        "log_matched_polls": matched, "rows_per_second": per_second.tolist(),
        "generate_request_s": {q: pct(post_s, q) for q in (50, 99, 100)}, "cpu_s": cpu,
        "errors": watch.errors, "passed": ok,
    }
    RESULTS.mkdir(exist_ok=True)
    name = "realtime_latency" + ("" if args.format == "parquet" else f"_{args.format}")
    (RESULTS / f"{name}.md").write_text(f"`{summary['command'].strip()}`\n\n{table}\n")
    (RESULTS / f"{name}_latest.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\nrealtime latency:", "PASSED" if ok else "FAILED", f"(lake and logs in {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
