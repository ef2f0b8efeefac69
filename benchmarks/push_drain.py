"""Decode one canned ``/query-stream`` body through the batch path and the push path.

    python -m benchmarks.push_drain --rows 1000000 --framing rows h2c --repeat 3

The body is framed as ksqlDB frames it (one HTTP/1.1 chunk, or one h2c DATA frame, per row).
``query`` is ``KsqlDBClient.query`` (4 MiB blocks, what an export run decodes); ``push`` is
``KsqlDBClient.push`` (blocks flushed whenever the transport has nothing more right now; the
canned server ends the body, which the push path reports as ``PushQueryEnded``). Rows are
decoded to Arrow and counted, nothing is written: this isolates receive and decode. Each
figure is the best of ``--repeat`` runs, wall and CPU seconds of this process.
"""

from __future__ import annotations

import argparse
import resource
import time

from benchmarks.data import flat_body
from benchmarks.server import CannedServer
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport

SQL = "SELECT ROWTIME, * FROM BENCH;"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def batch(client: KsqlDBClient) -> int:
    with client.query(SQL) as result:
        return sum(b.num_rows for b in result.batches())


def push(client: KsqlDBClient) -> int:
    from lakeexportd.errors import PushQueryEnded  # here: `--path query` runs on older trees

    rows = 0
    with client.push(SQL) as query:
        while True:
            try:
                got = query.next_batch(timeout=5.0)
            except PushQueryEnded:
                return rows
            if got is None:
                raise SystemExit("push: no rows for 5 s from a canned body")
            rows += got.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.push_drain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--framing", choices=["rows", "h2c"], nargs="+", default=["rows", "h2c"])
    parser.add_argument("--path", choices=["query", "push"], nargs="+", default=["query", "push"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    body = flat_body(args.rows)
    runs = {"query": batch, "push": push}
    for framing in args.framing:
        with CannedServer(body, framing) as server:
            for path in args.path:
                best: tuple[float, float] | None = None
                for _ in range(args.repeat):
                    transport = CurlTransport(server.url, http2=server.http2, read_timeout=600)
                    client = KsqlDBClient(transport, api="query-stream")
                    wall, cpu = time.perf_counter(), _cpu()
                    rows = runs[path](client)
                    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
                    client.close()
                    if rows != args.rows:
                        raise SystemExit(f"{path}: {rows} rows, expected {args.rows}")
                    if best is None or wall < best[0]:
                        best = (wall, cpu)
                assert best is not None
                print(f"{path:<6} {framing:<5} {args.rows:>10,} rows {best[0]:7.2f} s wall "
                      f"{best[1]:7.2f} s cpu {args.rows / best[0]:>12,.0f} rows/s")


if __name__ == "__main__":
    main()
