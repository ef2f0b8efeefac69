"""Wide decimals end to end: the sandbox's WIDE_DECIMALS stream, exported by the real CLI over
HTTP (``/query-stream`` and ``/query``), lands in Parquet digit for digit.

The truth is computed here, independently of lakeexportd: the wire text the sandbox sends,
parsed by the standard library's ``json`` with ``Decimal`` numbers (a DECIMAL inside a STRUCT
arrives after a trip through a double, e.g. ``1.0E7``: its truth is that value at the declared
scale), plus the edge values written out literally below.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.sandbox import Sandbox

EDGE = "9999999999999999999999999999.9999999999"  # DECIMAL(38, 10)
HUGE = "9" * 56 + "." + "9" * 20  # DECIMAL(76, 20)
WIDE = Context(prec=200)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=3, preload=400, preload_days=2) as sb:
        yield sb


def at_scale(value: Decimal | None, scale: int) -> str | None:
    """Plain text of ``value`` at ``scale`` digits: how the lake must hold it."""
    if value is None:
        return None
    exact = value.quantize(Decimal(1).scaleb(-scale), context=WIDE)
    assert exact == value, f"{value} does not fit scale {scale}: the test data is wrong"
    return f"{exact:f}"


def wire_truth(url: str, sql: str) -> dict[str, dict[str, Any]]:
    """The rows as the wire carries them, keyed by ID, decimals as text at their scale."""
    response = httpx.post(f"{url}/query-stream", json={"sql": sql}, timeout=60)
    response.raise_for_status()
    header, *lines = response.text.splitlines()
    names = json.loads(header)["columnNames"]
    rows = {}
    for line in lines:
        row = dict(zip(names, json.loads(line, parse_float=Decimal)))
        rows[row["ID"]] = row
    return rows


def expected(row: dict[str, Any]) -> dict[str, Any]:
    quote = row["QUOTE"]
    return {
        "ROWTIME": row["ROWTIME"],
        "AMOUNT": at_scale(row["AMOUNT"], 10),
        "AMOUNTS": None if row["AMOUNTS"] is None else [at_scale(v, 10) for v in row["AMOUNTS"]],
        "BY_CURRENCY": None if row["BY_CURRENCY"] is None else sorted(
            (k, at_scale(v, 10)) for k, v in row["BY_CURRENCY"].items()
        ),
        "QUOTE": None if quote is None else {
            "PRICE": at_scale(quote["PRICE"], 10), "LABEL": quote["LABEL"]
        },
        "HUGE": at_scale(row["HUGE"], 20),
    }


def text(value: Any) -> Any:
    """Decimals anywhere in a Parquet value as plain text (digit for digit)."""
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, list):
        return [text(v) for v in value]
    if isinstance(value, tuple):
        return tuple(text(v) for v in value)
    if isinstance(value, dict):
        return {k: text(v) for k, v in value.items()}
    return value


def lake_rows(root: Path, feed: str) -> dict[str, dict[str, Any]]:
    files = sorted((root / "streams" / feed).rglob("*.parquet"))
    assert files
    table = pa.concat_tables(pq.read_table(f) for f in files)
    assert table.schema.field("AMOUNT").type == pa.decimal128(38, 10)
    assert table.schema.field("HUGE").type == pa.decimal256(76, 20)
    rows = {}
    for row in table.to_pylist():
        row = text(row)
        if row["BY_CURRENCY"] is not None:
            row["BY_CURRENCY"] = sorted(row["BY_CURRENCY"])
        rows[row.pop("ID")] = row
    return rows


def config(tmp_path: Path, url: str, api: str) -> Path:
    path = tmp_path / "lakeexportd.yaml"
    path.write_text(
        f"""
ksqldb: {{url: "{url}", api: {api}, max_retries: 0}}
lake: {{root: lake}}
feeds:
  - {{name: wide, source: WIDE_DECIMALS, kind: stream}}
"""
    )
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lakeexportd", *args], capture_output=True, text=True,
        env=dict(os.environ), timeout=120,
    )


@pytest.mark.parametrize("api", ["query-stream", "query"])
def test_cli_export_keeps_every_digit_over_both_endpoints(
    sandbox: Sandbox, tmp_path: Path, api: str
) -> None:
    """Edges of DECIMAL(38, 10) and DECIMAL(76, 20), tiny values and zero, at top level and in
    ARRAY, MAP and STRUCT: the Parquet values are the wire's, digit for digit."""
    result = cli("export", "-c", str(config(tmp_path, sandbox.url, api)), "wide")
    assert result.returncode == 0, result.stderr
    lake = lake_rows(tmp_path / "lake", "wide")
    meta = json.loads((tmp_path / "lake/streams/wide/_metadata.json").read_text())
    truth = {
        key: expected(row)
        for key, row in wire_truth(sandbox.url, "SELECT ROWTIME, * FROM WIDE_DECIMALS;").items()
        if row["ROWTIME"] <= meta["watermark"]["rowtime_ms"]
    }
    assert len(truth) > 300 and lake == truth
    amounts = {r["AMOUNT"] for r in lake.values()}
    assert {EDGE, "-" + EDGE, "0.0000000000", "0.0000000001", "-0.0000000001"} <= amounts
    assert {HUGE, "-" + HUGE, "0." + "0" * 19 + "1"} <= {r["HUGE"] for r in lake.values()}
    inside = [v for r in lake.values() for v in (r["AMOUNTS"] or [])]
    inside += [v for r in lake.values() for _, v in (r["BY_CURRENCY"] or [])]
    assert {EDGE, "-" + EDGE, "-0.0000000001", None} <= set(inside)
    prices = {r["QUOTE"]["PRICE"] for r in lake.values() if r["QUOTE"]}
    # Written 1.0E7, 1.0E-10, -1.0E20, 0.0, -1.0E-4 (Java's Double.toString) inside the STRUCT.
    assert {"10000000.0000000000", "0.0000000001", "-100000000000000000000.0000000000",
            "0.0000000000", "-0.0001000000", None} <= prices


@pytest.mark.parametrize("api", ["query-stream", "query"])
def test_flat_wide_decimals_take_the_csv_path_exactly(sandbox: Sandbox, api: str) -> None:
    """A flat projection goes through Arrow's CSV reader (decimal256 read as text, then cast
    exactly) and keeps every digit."""
    sql = "SELECT ROWTIME, ID, AMOUNT, HUGE FROM WIDE_DECIMALS;"
    client = KsqlDBClient(CurlTransport(sandbox.url), api=api)  # type: ignore[arg-type]
    try:
        with client.query(sql) as result:
            table = pa.Table.from_batches(list(result.batches()), schema=result.schema)
            assert result.fast_rows == table.num_rows  # decoded by Arrow's CSV reader
    finally:
        client.close()
    truth = wire_truth(sandbox.url, sql)
    assert table.num_rows == len(truth) > 300
    for row in table.to_pylist():
        wire = truth[row["ID"]]
        assert f"{row['AMOUNT']:f}" == at_scale(wire["AMOUNT"], 10)
        assert f"{row['HUGE']:f}" == at_scale(wire["HUGE"], 20)
    assert EDGE in {f"{v:f}" for v in table.column("AMOUNT").to_pylist()}


def test_a_value_the_type_cannot_hold_fails_the_feed_naming_rowtime_column_and_value(
    tmp_path: Path,
) -> None:
    """DECIMAL(12, 10) in the header, 38 digits on the wire: exit 1 (a feed error, not 75),
    one message with the feed, the row's ROWTIME, the column and the value; nothing written."""
    with Sandbox.start(seed=3, preload=40, preload_days=1) as sb:
        httpx.post(f"{sb.url}/_sandbox/schema", json={
            "source": "WIDE_DECIMALS", "action": "change_type", "column": "AMOUNT",
            "type": "DECIMAL(12, 10)"}).raise_for_status()
        sql = "SELECT ROWTIME, ID, AMOUNT FROM WIDE_DECIMALS;"
        response = httpx.post(f"{sb.url}/query-stream", json={"sql": sql}, timeout=60)
        rows = [json.loads(line, parse_float=Decimal) for line in response.text.splitlines()[1:]]
        result = cli("export", "-c", str(config(tmp_path, sb.url, "query-stream")), "wide")
    too_wide = {
        rowtime: value for rowtime, _, value in rows
        if len(f"{abs(value):f}".replace(".", "").lstrip("0")) > 12
    }
    assert result.returncode == 1, result.stderr
    message = result.stderr
    match = re.search(r"the row with ROWTIME (\d+), ", message)
    assert match and int(match[1]) in too_wide, message
    assert "feed 'wide'" in message and "column AMOUNT (DECIMAL(12, 10))" in message
    assert f"{too_wide[int(match[1])]:f} does not fit" in message
    assert "without rounding" in message
    assert not list((tmp_path / "lake/streams/wide").rglob("*.parquet"))
