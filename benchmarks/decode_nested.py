"""Decode rate of nested rows: the sandbox's TRANSACTION_STREAM answer (STRUCT, ARRAY, MAP).

``python -m benchmarks.decode_nested [ROWS] [ROUNDS]`` decodes the cached body (generated from
a sandbox on first use, see ``data.nested_body``) in 4 MiB blocks, the way ``framing`` hands
them to ``RowDecoder``, once through ``decode`` (the typed JSON path) and once row by row
through ``decode_exact`` (the only path nested rows had before), rounds alternating. It prints
the best round of each in rows per second of CPU time (the machine may be shared) and of wall
time, and checks that both paths give equal tables.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import pyarrow as pa

from benchmarks.data import nested_body
from lakeexportd.ksqldb.decode import RowDecoder
from lakeexportd.ksqldb.types import parse_type

BLOCK_BYTES = 4 << 20


def blocks(body: bytes) -> list[bytes]:
    out, start = [], 0
    while start < len(body):
        end = body.rfind(b"\n", start, start + BLOCK_BYTES) + 1 or len(body)
        out.append(body[start:end])
        start = end
    return out


def main(rows: int = 200_000, rounds: int = 3) -> None:
    with open(nested_body(rows), "rb") as f:
        header = json.loads(f.readline())
        body = f.read()
    parts = blocks(body)
    names = header["columnNames"]
    types = [parse_type(t) for t in header["columnTypes"]]

    def typed(decoder: RowDecoder, block: bytes, first: int) -> pa.Table:
        return decoder.decode(block, first)

    def exact(decoder: RowDecoder, block: bytes, first: int) -> pa.Table:
        return decoder.decode_exact(block.split(b"\n")[:-1], first)

    paths: dict[str, Callable[[RowDecoder, bytes, int], pa.Table]] = {
        "typed JSON (decode)": typed, "row by row (decode_exact)": exact,
    }
    best = {name: (float("inf"), float("inf")) for name in paths}
    results: dict[str, pa.Table] = {}
    for _ in range(rounds):
        for name, path in paths.items():
            decoder = RowDecoder(names, types)
            cpu, wall = time.process_time(), time.perf_counter()
            tables: list[pa.Table] = []
            for block in parts:
                tables.append(path(decoder, block, sum(t.num_rows for t in tables) + 1))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            best[name] = (min(best[name][0], cpu), min(best[name][1], wall))
            results[name] = pa.concat_tables(tables)
            assert results[name].num_rows == rows
    first, second = results.values()
    assert first.equals(second), "the two paths disagree"
    print(f"{rows} nested rows, {len(body) / 1e6:.0f} MB, best of {rounds}:")
    for name, (cpu, wall) in best.items():
        print(f"  {name:26s} {rows / cpu:9,.0f} rows/s CPU  {rows / wall:9,.0f} rows/s wall")
    (typed_cpu, typed_wall), (exact_cpu, exact_wall) = best.values()
    print(f"  speed-up: {exact_cpu / typed_cpu:.1f}x CPU, {exact_wall / typed_wall:.1f}x wall")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
