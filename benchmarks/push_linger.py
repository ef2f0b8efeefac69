"""The push reader's CPU at a low row rate, with and without its linger (``push.LINGER_S``).

    python -m benchmarks.push_linger --queries 20 --rate 100 --seconds 15 --linger 0 0.1

Starts ``lakeexportd sandbox --rate RATE`` (rows appended to TRANSACTION_STREAM, each its own
HTTP chunk, as ksqlDB sends them), then for each linger runs QUERIES push queries from
``latest`` in threads of this process, each handing its rows over as ``next_batch`` gives
them, and reports this process's CPU (user + system) per second of wall time while they drain,
and the rows per second they received. Nothing is written: this isolates receive and decode.
"""

from __future__ import annotations

import argparse
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from lakeexportd.ksqldb import push
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport

SQL = "SELECT ROWPARTITION, ROWOFFSET, ROWTIME, * FROM TRANSACTION_STREAM EMIT CHANGES;"
LAKEEXPORTD = Path(sys.executable).with_name("lakeexportd")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(url: str, queries: int, seconds: float, linger: float) -> tuple[float, float]:
    """(rows/s received, % of a core) over ``seconds`` after a 3 s warm-up."""
    stop = threading.Event()
    rows = [0] * queries

    def consume(i: int) -> None:
        client = KsqlDBClient(CurlTransport(url), api="query-stream")  # type: ignore[arg-type]
        with client.push(SQL, properties={"auto.offset.reset": "latest"}) as query:
            query._linger = linger
            while not stop.is_set():
                batch = query.next_batch(timeout=0.2)
                if batch is not None:
                    rows[i] += batch.num_rows
        client.close()

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(queries)]
    for thread in threads:
        thread.start()
    time.sleep(3.0)
    rows0, cpu0, wall0 = sum(rows), _cpu(), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - wall0
    result = ((sum(rows) - rows0) / wall, (_cpu() - cpu0) / wall * 100)
    stop.set()
    for thread in threads:
        thread.join()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0, help="sandbox rows per second")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--linger", type=float, nargs="+", default=[0.0, push.LINGER_S])
    args = parser.parse_args()
    port = _free_port()
    sandbox = subprocess.Popen([str(LAKEEXPORTD), "sandbox", "--port", str(port), "--rate",
                                str(args.rate)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        assert sandbox.stdout is not None
        sandbox.stdout.readline()  # its one line when ready
        url = f"http://127.0.0.1:{port}"
        print(f"{args.queries} push queries, sandbox --rate {args.rate:g}, "
              f"{args.seconds:g} s each")
        print("| linger (s) | rows/s received | CPU, % of a core |\n|---:|---:|---:|")
        for linger in args.linger:
            rate, cpu = measure(url, args.queries, args.seconds, linger)
            print(f"| {linger:g} | {rate:,.0f} | {cpu:.1f} |")
    finally:
        sandbox.terminate()
        sandbox.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
