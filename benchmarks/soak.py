"""``make soak``: the daemon with 20 feeds against a sandbox generating 2,000 rows/s.

Runs the real processes (``lakeexportd sandbox`` and ``lakeexportd run``) on free 127.0.0.1
ports for ``--minutes`` (default 5), samples the daemon's RSS and open file descriptors every
5 s, stops the daemon with SIGTERM, then checks that every stream row up to each feed's final
watermark is in the lake exactly once and that every feed's metadata agrees with its files.
Prints a summary and writes ``benchmarks/results/soak_latest.json``. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pyarrow.parquet as pq
import yaml

from lakeexportd.audit.verify import listed_files, verify_feed
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.lake import layout
from lakeexportd.lake.metadata import MetadataStore

STREAMS = [
    "TRANSACTION_STREAM",
    "TRANSACTION_FLATTENED",
    "TRANSACTION_ANONYMIZED",
    "TRANSACTION_BLACKLISTED",
]
TABLES = ["USER_SUMMARY", "PAYMENT_TOTALS", "PRODUCT_COUNTS", "USER_SUMMARY"]
RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def feeds() -> list[dict[str, Any]]:
    """20 feeds: each stream 4 times (different schedules), 4 table feeds."""
    out = []
    for i, source in enumerate(STREAMS):
        for copy in range(4):
            out.append(
                {
                    "name": f"{source.lower()}_{copy}",
                    "source": source,
                    "kind": "stream",
                    "schedule": {"every": f"{20 + 10 * copy + i}s"},
                }
            )
    for copy, source in enumerate(TABLES):
        out.append(
            {
                "name": f"{source.lower()}_t{copy}",
                "source": source,
                "kind": "table",
                "schedule": {"every": f"{30 + 5 * copy}s"},
            }
        )
    return out


def wait_ready(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} did not become ready at {url}")


def check_streams(root: Path, ksqldb: str, config: list[dict[str, Any]]) -> dict[str, Any]:
    """Every source row up to each feed's watermark once in the lake; metadata matches files."""
    client = KsqlDBClient(CurlTransport(ksqldb, read_timeout=600), api="query-stream")
    report: dict[str, Any] = {}
    try:
        for feed in config:
            name, kind = feed["name"], feed["kind"]
            problems = [str(p) for p in verify_feed(root, kind, name)]
            entry: dict[str, Any] = {"consistent": not problems, "problems": problems[:5]}
            doc = MetadataStore().load(layout.feed_dir(root, kind, name))
            if kind == "stream" and doc is not None and getattr(doc, "watermark_ms", None):
                mark = doc.watermark_ms  # type: ignore[union-attr]
                ids: list[str] = []
                for directory, f in listed_files(doc):
                    path = layout.feed_dir(root, "stream", name) / directory / f.name
                    ids += pq.read_table(path, columns=["TRANSACTION_ID"]).column(0).to_pylist()
                truth: list[str] = []
                with client.query(
                    f"SELECT TRANSACTION_ID FROM {feed['source']} WHERE ROWTIME <= {mark};"
                ) as r:
                    for batch in r.batches():
                        truth += batch.column(0).to_pylist()
                entry.update(
                    rows=len(ids),
                    duplicates=len(ids) - len(set(ids)),
                    missing=len(set(truth) - set(ids)),
                    extra=len(set(ids) - set(truth)),
                )
            report[name] = entry
    finally:
        client.close()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lakeexportd-soak-"))
    sandbox_port, metrics_port = free_port(), free_port()
    ksqldb = f"http://127.0.0.1:{sandbox_port}"
    config = feeds()
    (work / "soak.yaml").write_text(
        yaml.safe_dump(
            {
                "ksqldb": {"url": ksqldb, "read_timeout": "600s"},
                "lake": {"root": str(work / "lake")},
                "scheduler": {"workers": 4, "stop_grace": "120s"},
                "defaults": {"settle_delay": "10s"},
                "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
                "feeds": config,
            }
        )
    )
    exe = str(Path(sys.executable).with_name("lakeexportd"))
    sandbox = subprocess.Popen(
        [
            exe,
            "sandbox",
            "--port",
            str(sandbox_port),
            "--rate",
            str(args.rate),
            "--preload",
            "20000",
            "--preload-days",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    daemon: subprocess.Popen[bytes] | None = None
    samples: list[dict[str, float]] = []
    try:
        wait_ready(f"{ksqldb}/healthcheck", sandbox, "sandbox")
        with open(work / "daemon.stderr", "wb") as err:
            daemon = subprocess.Popen(
                [exe, "run", "-c", str(work / "soak.yaml")],
                stderr=err,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_ready(f"http://127.0.0.1:{metrics_port}/readyz", daemon, "daemon")
        proc = psutil.Process(daemon.pid)
        started = time.monotonic()
        while time.monotonic() - started < args.minutes * 60:
            samples.append(
                {
                    "t": round(time.monotonic() - started, 1),
                    "rss_mb": proc.memory_info().rss / 1e6,
                    "fds": proc.num_fds(),
                }
            )
            now = samples[-1]
            print(
                f"  t={now['t']:6.0f}s  rss={now['rss_mb']:6.1f} MB  fds={now['fds']}",
                flush=True,
            )
            time.sleep(5)
        scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        daemon.send_signal(signal.SIGTERM)
        exit_code = daemon.wait(180)
        generated = httpx.get(f"{ksqldb}/_sandbox/stats").json()["counts"]
        checks = check_streams(work / "lake", ksqldb, config)
    finally:
        for p in (daemon, sandbox):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    warm = [s for s in samples if s["t"] >= 60] or samples
    last = [s for s in samples if s["t"] >= samples[-1]["t"] - 60]
    runs = {
        line.split("}")[0]: float(line.rsplit(" ", 1)[1])
        for line in scrape.splitlines()
        if line.startswith("lakeexportd_export_runs_total{")
    }
    summary = {
        "minutes": args.minutes,
        "rate": args.rate,
        "feeds": len(config),
        "daemon_exit": exit_code,
        "source_rows": generated,
        "rss_mb_after_warmup": round(warm[0]["rss_mb"], 1),
        "rss_mb_last_minute_median": round(statistics.median(s["rss_mb"] for s in last), 1),
        "rss_mb_max": round(max(s["rss_mb"] for s in samples), 1),
        "fds_after_warmup": warm[0]["fds"],
        "fds_last": samples[-1]["fds"],
        "fds_max": max(s["fds"] for s in samples),
        "runs_success": sum(v for k, v in runs.items() if 'result="success"' in k),
        "runs_not_success": sum(v for k, v in runs.items() if 'result="success"' not in k),
        "feeds_exactly_once": all(
            c.get("duplicates", 0) == 0 and c.get("missing", 0) == 0 and c.get("extra", 0) == 0
            for c in checks.values()
        ),
        "feeds_consistent": all(c["consistent"] for c in checks.values()),
        "stream_rows_checked": sum(c.get("rows", 0) for c in checks.values()),
        "per_feed": checks,
        "samples": samples,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak_latest.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        json.dumps({k: v for k, v in summary.items() if k not in ("per_feed", "samples")}, indent=2)
    )
    ok = exit_code == 0 and summary["feeds_exactly_once"] and summary["feeds_consistent"]
    print("soak:", "PASSED" if ok else "FAILED", f"(lake and logs in {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
