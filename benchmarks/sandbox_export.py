"""Export N rows served by the sandbox ksqlDB: throughput and peak memory of ``lakeexportd export``.

    python -m benchmarks.sandbox_export --rows 1000000

Starts ``lakeexportd sandbox --preload N`` on a free 127.0.0.1 port, waits until it has
formatted its rows (a first full query), then runs ``lakeexportd export`` of
TRANSACTION_FLATTENED (flat) and TRANSACTION_STREAM (nested) into a temp lake, each in its own
process; reports rows/s and the export process's peak RSS. The sandbox is Python, so it can be
the bottleneck here; ``make bench`` measures against canned bytes instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from lakeexportd.ksqldb.curl_stream import CurlTransport

FEEDS = {"flat": "TRANSACTION_FLATTENED", "nested": "TRANSACTION_STREAM"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_export(exe: str, config: Path, feed: str) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stderr of one export process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([exe, "export", "-c", str(config), feed], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode != 0:
        raise SystemExit(f"export {feed} failed:\n{done.stderr}")
    # RUSAGE_CHILDREN is the maximum over waited children: the exports (the sandbox still runs).
    return seconds, max(peak, before) / 1024, done.stderr.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    exe = str(Path(sys.executable).with_name("lakeexportd"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="lakeexportd-sandbox-bench-"))
    config = work / "bench.yaml"
    config.write_text(
        f"ksqldb: {{url: '{url}', read_timeout: 600s}}\nlake: {{root: '{work / 'lake'}'}}\n"
        "feeds:\n"
        + "".join(f"  - {{name: {n}, source: {s}, kind: stream}}\n" for n, s in FEEDS.items())
    )
    sandbox = subprocess.Popen(
        [exe, "sandbox", "--port", str(port), "--preload", str(args.rows), "--preload-days", "7"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    results = {}
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(f"{url}/healthcheck", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or sandbox.poll() is not None:
                    raise SystemExit("sandbox did not start") from None
                time.sleep(1)
        for name, source in FEEDS.items():  # warm the sandbox: it formats rows on first use
            # One chunk per row, as ksqlDB sends them: libcurl drains them at native speed.
            response = CurlTransport(url, read_timeout=600).open(
                "POST", "/query-stream", headers={"Content-Type": "application/json"},
                body=json.dumps({"sql": f"SELECT * FROM {source};"}).encode())
            served = sum(len(chunk) for chunk in response.iter_raw())
            response.close()
            seconds, peak_mb, line = run_export(exe, config, name)
            results[name] = {
                "rows": args.rows,
                "body_mb": round(served / 1e6, 1),
                "seconds": round(seconds, 2),
                "rows_per_s": round(args.rows / seconds),
                "peak_rss_mb": round(peak_mb, 1),
                "export_line": line,
            }
            print(
                f"{name:7s} {args.rows:,} rows in {seconds:.1f}s"
                f" = {args.rows / seconds:,.0f} rows/s, "
                f"peak RSS {peak_mb:.0f} MB ({served / 1e6:.0f} MB served)",
                flush=True,
            )
    finally:
        os.killpg(sandbox.pid, signal.SIGTERM)
        sandbox.wait(30)
    out = Path(__file__).parent / "results" / "sandbox_export_latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": f"python -m benchmarks.sandbox_export --rows {args.rows}",
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
