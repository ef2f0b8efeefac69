"""The Sandbox test double: ground truth, row generation, admin endpoints, schema changes."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal

import httpx
import pyarrow as pa
import pytest

from lakeexportd.sandbox import Sandbox
from lakeexportd.sandbox.catalog import Catalog
from lakeexportd.sandbox.expected import ARROW_TYPES

from .helpers import lines, query


def test_arrow_ground_truth(sandbox: Sandbox) -> None:
    """arrow() types columns like the exporter does and holds every row."""
    table = sandbox.arrow("TRANSACTION_STREAM")
    assert table.num_rows == sandbox.counts()["TRANSACTION_STREAM"]
    schema = table.schema
    assert schema.field("ROWTIME").type == pa.int64()
    assert schema.field("AMOUNT").type == pa.decimal128(10, 2)
    assert schema.field("TRANSACTION_TIME").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("SETTLEMENT_DATE").type == pa.date32()
    assert schema.field("LOCAL_TIME").type == pa.time64("us")
    assert schema.field("DEVICE_FINGERPRINT").type == pa.binary()
    first = table.slice(0, 1).to_pylist()[0]
    assert isinstance(first["AMOUNT"], Decimal)
    millis = sandbox.rows("TRANSACTION_STREAM")[0]["LOCAL_TIME"]
    assert first["LOCAL_TIME"] == (dt.datetime.min + dt.timedelta(milliseconds=millis)).time()
    assert isinstance(first["PAYLOAD"]["ITEMS"][0]["ADDED_AT"], dt.datetime)
    assert dict(first["PAYLOAD"]["META"])["country"]
    assert sandbox.arrow("USER_SUMMARY").num_rows == len(sandbox.table("USER_SUMMARY"))


def test_expected_types_name_every_column_of_every_source() -> None:
    """The written-out Arrow types list each source's columns, in order, and nothing else."""
    columns = {s.name: [c.name for c in s.columns] for s in Catalog().sources.values()}
    assert {name: list(types) for name, types in ARROW_TYPES.items()} == columns


def test_arrow_truth_of_every_source_holds_its_rows_in_the_written_out_types(
    sandbox: Sandbox,
) -> None:
    """Every value fits its stated type (HUGE's 76 digits in decimal256 too)."""
    for name, types in ARROW_TYPES.items():
        table = sandbox.arrow(name)
        assert table.schema.types == [pa.int64(), *types.values()], name
        assert table.num_rows == sandbox.counts()[name] > 0


def test_an_added_column_needs_its_expected_type_named(fresh: Callable[..., Sandbox]) -> None:
    """A column added at run time is in no table: arrow() asks for its type, never guesses."""
    sb = fresh(preload=5)
    with httpx.Client(base_url=sb.url) as c:
        c.post("/_sandbox/schema", json={"source": "TRANSACTION_FLATTENED", "column": "NOTE",
                                         "action": "add", "type": "STRING"}).raise_for_status()
    with pytest.raises(KeyError, match="NOTE was added or retyped"):
        sb.arrow("TRANSACTION_FLATTENED")
    table = sb.arrow("TRANSACTION_FLATTENED", changed={"NOTE": pa.string()})
    assert table.schema.field("NOTE").type == pa.string()
    assert table.column("NOTE").null_count == 5


def test_generate_with_rowtime_range(fresh: Callable[..., Sandbox]) -> None:
    """generate(n, range) appends n rows with ROWTIMEs inside the range (minus the disorder)."""
    sb = fresh()
    assert sb.generate(100, (1_000_000_000_000, 1_000_000_060_000)) == 100
    times = [r["ROWTIME"] for r in sb.rows("TRANSACTION_STREAM")]
    assert len(times) == 100
    assert all(1_000_000_000_000 - 5_000 < t < 1_000_000_060_000 for t in times)


def test_admin_generate_and_stats(fresh: Callable[..., Sandbox]) -> None:
    """POST /_sandbox/generate appends rows; GET /_sandbox/stats counts them per source."""
    sb = fresh(preload=10)
    with httpx.Client(base_url=sb.url) as c:
        r = c.post("/_sandbox/generate", json={"rows": 25, "rowtime_ms": 1_700_000_000_000})
        assert r.status_code == 200 and r.json()["generated"] == 25
        stats = c.get("/_sandbox/stats").json()
        assert stats["counts"]["TRANSACTION_STREAM"] == 35
        assert stats["counts"]["TRANSACTION_FLATTENED"] == 35
        assert c.post("/_sandbox/generate", json={"rows": -1}).status_code == 400
        body = lines(query(c, "SELECT ROWTIME FROM TRANSACTION_STREAM "
                              "WHERE ROWTIME <= 1700000000000;"))
        assert len(body) - 1 == 25


def test_schema_change_type_and_drop(fresh: Callable[..., Sandbox]) -> None:
    """POST /_sandbox/schema changes a column's type (values cast) or drops a column."""
    sb = fresh(preload=5)
    with httpx.Client(base_url=sb.url) as c:
        r = c.post("/_sandbox/schema", json={"source": "TRANSACTION_FLATTENED",
                                             "column": "QUANTITY", "type": "STRING"})
        assert r.status_code == 200
        head, first, *_ = lines(query(c, "SELECT QUANTITY, AMOUNT FROM TRANSACTION_FLATTENED;"))
        assert json.loads(head)["columnTypes"] == ["STRING", "DECIMAL(10, 2)"]
        assert isinstance(json.loads(first)[0], str)
        r = c.post("/_sandbox/schema", json={"source": "TRANSACTION_FLATTENED",
                                             "column": "AMOUNT", "action": "drop"})
        assert "AMOUNT" not in [col["name"] for col in r.json()["columns"]]
        head = lines(query(c, "SELECT * FROM TRANSACTION_FLATTENED;"))[0]
        assert "AMOUNT" not in json.loads(head)["columnNames"]
        sb.generate(3)
        assert len(lines(query(c, "SELECT * FROM TRANSACTION_FLATTENED;"))) == 9
        bad = c.post("/_sandbox/schema", json={"source": "NOPE", "column": "X"})
        assert bad.status_code == 400


def test_query_sees_consistent_snapshot(fresh: Callable[..., Sandbox]) -> None:
    """A stream pull returns the rows present at its start, not rows appended meanwhile."""
    sb = fresh(preload=3000)
    # The sandbox sends one chunk per row, and trickle pauses between chunks: 1 ms a row keeps
    # the answer going (about 3 s) while rows are appended, without a minute of waiting.
    sb.inject("trickle", chunk_bytes=65536, seconds=0.001, path="/query-stream")
    with httpx.Client(base_url=sb.url, timeout=20) as c, c.stream(
        "POST", "/query-stream", json={"sql": "SELECT * FROM TRANSACTION_FLATTENED;"}
    ) as r:
        stream = r.iter_lines()
        received = [next(stream)]
        sb.generate(500)
        received += list(stream)
    assert len(received) - 1 == 3000
