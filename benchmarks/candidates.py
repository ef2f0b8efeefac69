"""The two reference pipelines, each run as ``python -m benchmarks.candidates KIND URL OUT [h2c]``.

- ``floor``: the fastest native path found on this machine for the same bytes to the same
  day-partitioned Snappy Parquet: the whole body read with libcurl (pycurl: ksqlDB sends one
  HTTP chunk or HTTP/2 DATA frame per row, and libcurl drains a million of them in about 0.3 s
  where Python HTTP parsers take seconds; h2c with prior knowledge when asked), each line's
  brackets turned into commas in place with numpy (``bytes.replace`` runs at ~150 MB/s),
  Arrow's multi-threaded CSV reader with exact column types, one sort by day, and the days
  taken and written by two threads (take and Parquet encoding release the GIL). No per-row
  Python and no memory bound: it holds the whole answer.
- ``naive``: what a script would do: read the whole answer with ``http.client`` (HTTP/1.1
  only), ``json.loads`` every row (exact decimals), a pandas DataFrame, ``to_parquet`` per day.

Both write ``OUT/year=YYYY/month=MM/day=DD/data.parquet`` with the schema lakeexportd uses.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import sys
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pycurl

from lakeexportd.ksqldb.types import arrow_schema, parse_type

_MS_PER_DAY = 86_400_000
_EPOCH = dt.date(1970, 1, 1)


_QUERY = json.dumps({"sql": "SELECT ROWTIME, * FROM BENCH;", "properties": {}})
_ACCEPT = "application/vnd.ksqlapi.delimited.v1"


def fetch_curl(url: str, http2: bool = False) -> bytes:
    """The whole answer through libcurl: chunked (or HTTP/2) framing removed in C."""
    parts: list[bytes] = []
    curl = pycurl.Curl()
    curl.setopt(pycurl.URL, url + "/query-stream")
    curl.setopt(pycurl.POSTFIELDS, _QUERY)
    curl.setopt(pycurl.HTTPHEADER, [f"Accept: {_ACCEPT}", "Content-Type: application/json"])
    curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE if http2
                else pycurl.CURL_HTTP_VERSION_1_1)
    curl.setopt(pycurl.BUFFERSIZE, 1 << 20)
    curl.setopt(pycurl.WRITEFUNCTION, parts.append)
    curl.perform()
    status = curl.getinfo(pycurl.RESPONSE_CODE)
    curl.close()
    if status != 200:
        raise SystemExit(f"HTTP {status}")
    return b"".join(parts)


def fetch(url: str) -> bytes:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    conn.request("POST", "/query-stream", body=_QUERY,
                 headers={"Accept": _ACCEPT, "Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"HTTP {response.status}")
    data = response.read()
    conn.close()
    return data


def _schema(header: bytes) -> pa.Schema:
    obj = json.loads(header)
    names = obj["columnNames"]
    return arrow_schema(names, [parse_type(t, column=n) for n, t in zip(names, obj["columnTypes"])])


def _day_dir(out: Path, day: int) -> Path:
    date = _EPOCH + dt.timedelta(days=day)
    path = out / f"year={date:%Y}" / f"month={date:%m}" / f"day={date:%d}"
    path.mkdir(parents=True, exist_ok=True)
    return path / "data.parquet"


def _write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="snappy", use_dictionary=True,
                   write_statistics=True, row_group_size=262_144)


def floor(url: str, out: Path, http2: bool = False) -> int:
    data = bytearray(fetch_curl(url, http2))
    cut = data.index(b"\n") + 1
    schema = _schema(bytes(data[:cut]))
    # Each line's brackets become commas in place (two empty edge fields, skipped below).
    raw = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(raw == ord("\n"))
    raw[cut] = raw[ends[1:] - 1] = raw[ends[1:-1] + 1] = ord(",")
    csv_types = {f.name: (pa.timestamp("ms") if pa.types.is_timestamp(f.type) else f.type)
                 for f in schema}
    table = pacsv.read_csv(
        pa.BufferReader(pa.py_buffer(memoryview(data)[cut:])),
        read_options=pacsv.ReadOptions(column_names=["_open", *schema.names, "_close"],
                                       block_size=4 << 20),
        parse_options=pacsv.ParseOptions(double_quote=False, escape_char=False),
        convert_options=pacsv.ConvertOptions(column_types=csv_types, null_values=["null"],
                                             include_columns=schema.names,
                                             strings_can_be_null=True,
                                             quoted_strings_can_be_null=False),
    )
    del data, raw
    table = pa.Table.from_arrays(
        [c.cast(f.type) if pa.types.is_timestamp(f.type) else c
         for c, f in zip(table.columns, schema)], schema=schema)
    days = pc.divide(table.column("ROWTIME"), _MS_PER_DAY).to_numpy()
    order = np.argsort(days, kind="stable")
    sorted_days = days[order]
    bounds = np.flatnonzero(sorted_days[1:] != sorted_days[:-1]) + 1
    starts = [0, *bounds.tolist()]
    ends_ = [*bounds.tolist(), len(days)]

    def one_day(start: int, end: int) -> None:
        # take and encode both release the GIL: two days at a time use both cores.
        part = table.take(pa.array(order[start:end]))
        _write(part, _day_dir(out, int(sorted_days[start])))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one_day, starts, ends_))
    return int(table.num_rows)


def naive(url: str, out: Path, http2: bool = False) -> int:
    import pandas as pd

    if http2:
        raise SystemExit("naive: http.client speaks HTTP/1.1 only")
    data = fetch(url)
    lines = data.split(b"\n")
    header = json.loads(lines[0])
    schema = _schema(lines[0])
    rows = [json.loads(line, parse_float=Decimal) for line in lines[1:] if line]
    frame = pd.DataFrame(rows, columns=header["columnNames"])
    frame["TRANSACTION_TIME"] = pd.to_datetime(frame["TRANSACTION_TIME"], utc=True)
    frame["_day"] = frame["ROWTIME"] // _MS_PER_DAY
    for day, part in frame.groupby("_day"):
        part.drop(columns="_day").to_parquet(
            _day_dir(out, int(day)), engine="pyarrow", compression="snappy", index=False,
            schema=schema,
        )
    return len(frame)


def main() -> None:
    kind, url, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    http2 = sys.argv[4:] == ["h2c"]
    run: Callable[[str, Path, bool], int] = {"floor": floor, "naive": naive}[kind]
    rows = run(url, out, http2)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
