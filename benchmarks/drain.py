"""Time how fast each HTTP client drains one canned ``/query-stream`` body (no decoding).

    python -m benchmarks.drain --rows 1000000 --framing rows --client curl httpx

``rows`` frames the body as ksqlDB does (one HTTP/1.1 chunk per row), ``h2c`` as one HTTP/2
DATA frame per row, ``large`` in 4 MiB chunks. ``curl`` is lakeexportd's transport
(``lakeexportd.ksqldb.curl_stream``), ``httpx`` the client it replaced for the row stream.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.data import flat_body
from benchmarks.server import FRAMINGS, CannedServer
from lakeexportd.ksqldb.curl_stream import CurlTransport

HEADERS = {"Accept": "application/vnd.ksqlapi.delimited.v1", "Content-Type": "application/json"}
QUERY = b'{"sql":"SELECT ROWTIME, * FROM BENCH;","properties":{}}'


def drain(client: str, url: str, http2: bool) -> tuple[int, str]:
    """Bytes received and the HTTP version."""
    total = 0
    if client == "curl":
        response = CurlTransport(url, http2=http2, read_timeout=600).open(
            "POST", "/query-stream", headers=HEADERS, body=QUERY)
        for block in response.iter_raw():
            total += len(block)
        response.close()
        return total, response.http_version
    import httpx

    with httpx.Client(http1=not http2, http2=http2, timeout=600) as http, http.stream(
        "POST", url + "/query-stream", content=QUERY, headers=HEADERS
    ) as answer:
        for block in answer.iter_raw():
            total += len(block)
        return total, answer.http_version


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--framing", choices=FRAMINGS, default="rows")
    parser.add_argument("--client", choices=["curl", "httpx"], nargs="+", default=["curl"])
    args = parser.parse_args()
    body = flat_body(args.rows)
    with CannedServer(body, args.framing) as server:
        for client in args.client:
            started = time.perf_counter()
            size, version = drain(client, server.url, server.http2)
            seconds = time.perf_counter() - started
            if size != body.stat().st_size:
                raise SystemExit(f"{client}: {size} bytes, expected {body.stat().st_size}")
            print(f"{client:<6} {args.framing:<6} {version:<9} {args.rows:>10,} rows "
                  f"{size / 1e6:8.1f} MB {seconds:7.2f} s {args.rows / seconds:>12,.0f} rows/s")


if __name__ == "__main__":
    main()
