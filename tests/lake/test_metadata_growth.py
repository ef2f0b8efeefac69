"""With compaction, ``_metadata.json`` stops growing with the number of past runs (req 5).

Many days of one-minute files are listed in a document, then swapped by the real planning
and swap steps (``compaction.plan``, ``metadata_update.with_compacted``) and their retired
entries expired past the grace, as the daemon's daily job and the next export do. No file is
written: sizes are those of the encoded document. (Timings are in
``benchmarks/metadata_growth.py``, never in tests.)
"""

from __future__ import annotations

import datetime as dt

from lakeexportd.lake import layout
from lakeexportd.lake.compaction import plan
from lakeexportd.lake.metadata_codec import encode
from lakeexportd.lake.metadata_model import FileEntry, Partition, StreamMetadata, WrittenFile
from lakeexportd.lake.metadata_update import expire_retired, with_compacted

START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def minute_runs(days: int) -> StreamMetadata:
    partitions = []
    for d in range(days):
        day = START + dt.timedelta(days=d)
        files = tuple(FileEntry(layout.data_file_name(day + dt.timedelta(minutes=m)), 100,
                                9_000) for m in range(1440))
        partitions.append(Partition(layout.day_partition(day.date()), files))
    return StreamMetadata(feed="tx", source="TX", partitions=tuple(partitions),
                          watermark_ms=int((START + dt.timedelta(days=days)).timestamp() * 1000))


def compacted(doc: StreamMetadata, now: dt.datetime) -> StreamMetadata:
    days, _ = plan(doc, before=now.date() - dt.timedelta(days=1), target=256 * 1024 * 1024)
    for day in days:
        outputs = [WrittenFile(day.partition, layout.compacted_file_name(now, i + 1),
                               sum(f.records for f in group), sum(f.size_bytes for f in group))
                   for i, group in enumerate(day.groups)]
        doc = with_compacted(doc, day.partition, [f.name for f in day.inputs], outputs, now=now)
    doc, _ = expire_retired(doc, now + dt.timedelta(hours=2), 3600)
    return doc


def test_closed_days_list_one_file_and_the_document_stays_small() -> None:
    """After compaction each closed day lists one file, the open days keep theirs, and the
    encoded document grows by a few hundred bytes per extra day (off: by 1,440 files' worth)."""
    sizes = {}
    for days in (8, 24):
        doc = minute_runs(days)
        now = START + dt.timedelta(days=days)
        small = compacted(doc, now)
        cutoff = now.date() - dt.timedelta(days=1)
        for p in small.partitions:
            closed = layout.partition_day(p.path) < cutoff
            assert len(p.files) == (1 if closed else 1440), p.path
        assert small.total_records == doc.total_records
        assert not small.retired
        sizes[days] = (len(encode(small)), len(encode(doc)))
    per_day_on = (sizes[24][0] - sizes[8][0]) / 16
    per_day_off = (sizes[24][1] - sizes[8][1]) / 16
    assert per_day_on < 400, per_day_on
    assert per_day_off > 1440 * 50, per_day_off
    assert sizes[24][0] < 500_000
