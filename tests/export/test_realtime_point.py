"""The committed point of a realtime feed: where its query starts, which rows it keeps, and
how the point is stored (``_metadata.json`` and a Delta log's transaction identifiers)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from lakeexportd.config.model import Feed, Schedule
from lakeexportd.errors import KsqlDBStreamError
from lakeexportd.export.realtime import fresh_rows, starting_point
from lakeexportd.lake import delta
from lakeexportd.lake.metadata_codec import encode, from_json
from lakeexportd.lake.metadata_model import Offsets, StreamMetadata
from lakeexportd.lake.storage import LOCAL

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def batch(rows: list[tuple[int, int, int, str]]) -> pa.RecordBatch:
    parts, offsets, times, ids = zip(*rows, strict=True)
    return pa.RecordBatch.from_arrays(
        [pa.array(parts, pa.int32()), pa.array(offsets, pa.int64()),
         pa.array(times, pa.int64()), pa.array(ids)],
        names=["ROWPARTITION", "ROWOFFSET", "ROWTIME", "ID"])


def test_rows_at_or_below_the_point_are_dropped_and_the_pseudo_columns_go() -> None:
    rows = batch([(0, 5, 100, "a"), (0, 6, 101, "b"), (1, 2, 102, "c"), (1, 3, 103, "d"),
                  (2, 0, 104, "e")])
    kept, reached = fresh_rows(rows, {0: 5, 1: 3}, None)
    assert kept.schema.names == ["ROWTIME", "ID"]
    assert kept.column("ID").to_pylist() == ["b", "e"]
    assert reached == {0: 6, 2: 0}  # partition 1 sent nothing new


def test_the_start_time_holds_in_every_partition() -> None:
    rows = batch([(0, 7, 99, "old"), (0, 8, 150, "new"), (3, 0, 50, "older")])
    kept, reached = fresh_rows(rows, {0: 6}, 100)
    assert kept.column("ID").to_pylist() == ["new"]
    # where each partition stands, the filtered rows included: they never count
    assert reached == {0: 8, 3: 0}


def test_a_row_without_its_offset_is_refused() -> None:
    rows = pa.RecordBatch.from_arrays(
        [pa.array([None], pa.int32()), pa.array([1], pa.int64()), pa.array([1], pa.int64())],
        names=["ROWPARTITION", "ROWOFFSET", "ROWTIME"])
    with pytest.raises(KsqlDBStreamError, match="ROWPARTITION or ROWOFFSET"):
        fresh_rows(rows, {}, None)


def feed(start: str = "earliest") -> Feed:
    return Feed(name="tx", source="S", kind="stream", schedule=Schedule(every=60.0),
                mode="realtime", start=start)  # type: ignore[arg-type]


def test_the_starting_point_offsets_then_watermark_then_start() -> None:
    committed = Offsets({0: 4}, 77)
    assert starting_point(StreamMetadata("tx", "S", offsets=committed, watermark_ms=90),
                          feed(), NOW) == committed
    # switched from batch: after its watermark, in every partition
    assert starting_point(StreamMetadata("tx", "S", watermark_ms=90), feed(), NOW) == \
        Offsets({}, 90)
    assert starting_point(StreamMetadata("tx", "S"), feed(), NOW) == Offsets({}, None)
    now_ms = int(NOW.timestamp() * 1000)
    assert starting_point(StreamMetadata("tx", "S"), feed("now"), NOW) == Offsets({}, now_ms)


def test_offsets_round_trip_through_the_metadata_document() -> None:
    doc = StreamMetadata("tx", "S", watermark_ms=9, offsets=Offsets({1: 7, 0: 41}, None))
    raw = json.loads(encode(doc))
    assert raw["offsets"] == {"partitions": {"0": 41, "1": 7}, "after_ms": None}
    assert from_json(raw).offsets == Offsets({0: 41, 1: 7}, None)  # type: ignore[union-attr]
    batch_doc = json.loads(encode(StreamMetadata("tx", "S", watermark_ms=9)))
    assert "offsets" not in batch_doc  # a batch feed's document is as before
    raw["offsets"]["partitions"]["x"] = 1
    with pytest.raises(ValueError, match="offsets"):
        from_json(raw)


def test_delta_keeps_the_point_in_the_commit_and_a_batch_commit_makes_it_stale(
        tmp_path: Path) -> None:
    feed_dir = tmp_path / "streams/tx"
    log = delta.DeltaFeed(LOCAL, feed_dir, "tx")
    schema = pa.schema([pa.field("ROWTIME", pa.int64())])
    table = log.create(delta.table_schema(schema, kind="stream"), kind="stream")
    assert log.offsets(table) is None
    log.commit(table, [], kind="stream", schema=table.schema(), txn_version=500, run_id="r1",
               offsets=Offsets({0: 3, 2: 9}, 120))
    table = log.load()
    assert table is not None
    assert log.offsets(table) == Offsets({0: 3, 2: 9}, 120)
    assert log.transaction_version(table) == 500
    log.commit(table, [], kind="stream", schema=table.schema(), txn_version=600, run_id="r2")
    table = log.load()
    assert table is not None
    assert log.offsets(table) is None  # a batch run moved the watermark past the point


def test_the_overlap_after_real_time_leaves_out_what_the_lake_holds_row_for_row() -> None:
    """Rows are compared whole and counted: two identical rows in ksqlDB, one in the lake,
    one to write; rows outside the overlap pass whatever the lake holds."""
    from lakeexportd.export.overlap import Overlap
    held = pa.table({"ROWTIME": [10, 20, 20, 5], "ID": ["a", "b", "b", "z"],
                     "year": [2026, 2026, 2026, 2026]})  # a folder column the query lacks
    overlap = Overlap(8, 20, [held], ["ROWTIME", "ID"])
    answer = pa.RecordBatch.from_pydict({"ROWTIME": [10, 10, 20, 20, 20, 5, 30],
                                         "ID": ["a", "a", "b", "b", "b", "z", "c"]})
    kept = overlap.new_rows(answer)
    assert list(zip(kept.column("ROWTIME").to_pylist(), kept.column("ID").to_pylist(),
                    strict=True)) == [(10, "a"), (20, "b"), (5, "z"), (30, "c")]
    assert overlap.dropped == 3
