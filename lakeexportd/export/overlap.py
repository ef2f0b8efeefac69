"""The first batch run after a feed ran in real time: its late rows, without its rows twice.

A realtime feed's watermark is the newest ROWTIME it committed. A batch run that simply went
on from there would lose what batch mode promises: rows that reach Kafka within
``settle_delay`` of their ROWTIME. So the first batch run after realtime asks for
``(watermark - settle_delay, now - settle_delay]`` (once that window reaches past the
watermark; until then the feed waits, its offsets kept) and leaves out, row for row, what the
lake already holds with a ROWTIME in the overlap ``(watermark - settle_delay, watermark]``.

Rows are compared whole (every column the query returns, as the lake stores them) and counted:
two identical rows in ksqlDB and one in the lake give one row to write. The lake's rows of
the overlap are few (``settle_delay`` worth), read once per switch.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def overlap_start(watermark: int, settle_delay: float, after_ms: int | None) -> int:
    """Where the first batch run after real time starts: ``settle_delay`` before the realtime
    watermark, not before the realtime start time (earlier batch runs hold those rows)."""
    lower = watermark - round(settle_delay * 1000)
    return lower if after_ms is None else max(lower, after_ms)


def _key(row: dict[str, Any], columns: list[str]) -> str:
    return json.dumps([row.get(c) for c in columns], default=str, separators=(",", ":"))


class Overlap:
    """The lake's rows with ROWTIME in ``(lower, upper]``, to drop from a batch's answer."""

    def __init__(self, lower: int, upper: int, lake: Iterable[pa.Table],
                 columns: list[str]) -> None:
        self.lower, self.upper = lower, upper
        self.columns = columns
        self.held: Counter[str] = Counter()
        self.dropped = 0
        for table in lake:
            table = self._within(table)
            present = [c for c in columns if c in table.column_names]
            for row in table.select(present).to_pylist():
                self.held[_key(row, columns)] += 1

    def _within(self, data: pa.Table | pa.RecordBatch) -> Any:
        rowtime = data.column("ROWTIME")
        mask = pc.and_(pc.greater(rowtime, self.lower), pc.less_equal(rowtime, self.upper))
        return data.filter(mask)

    def new_rows(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch`` without the rows the lake holds already (each held row drops one)."""
        if not self.held:
            return batch
        rowtime = batch.column("ROWTIME").to_numpy(zero_copy_only=False)
        candidates = [i for i, t in enumerate(rowtime.tolist()) if self.lower < t <= self.upper]
        if not candidates:
            return batch
        rows = batch.take(pa.array(candidates)).to_pylist()
        drop = set()
        for i, row in zip(candidates, rows, strict=True):
            key = _key(row, self.columns)
            if self.held[key] > 0:
                self.held[key] -= 1
                drop.add(i)
        if not drop:
            return batch
        self.dropped += len(drop)
        keep = pa.array([i not in drop for i in range(batch.num_rows)])
        return batch.filter(keep)
