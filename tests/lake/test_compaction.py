"""Compaction of a plain-Parquet stream (lake/compaction.py), on a lake the real exporter made.

The sandbox's stream is exported in many small runs (a file per day per run), then compacted;
rows are read back with pyarrow and DuckDB from the files, never through lakeexportd's own
counts, and compared with the sandbox's ground truth.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from lakecheck import assert_consistent, assert_exactly_once, exporter, feed, read_listed

from lakeexportd.config.model import Compaction
from lakeexportd.errors import FeedError
from lakeexportd.lake import layout
from lakeexportd.lake.compaction import compact_feed
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import StreamMetadata
from lakeexportd.lake.rebuild import rebuild_stream
from lakeexportd.lake.storage import LOCAL
from lakeexportd.sandbox import Sandbox

SOURCE = "TRANSACTION_FLATTENED"
TX = feed("tx", SOURCE, settle_delay=0.0, compaction=Compaction(after_days=1))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=13, preload=600, preload_days=4) as sb:
        yield sb


def runs_over(sb: Sandbox, root: Path, hours: int = 6) -> dt.datetime:
    """Export the stream in runs ``hours`` apart over its whole history; returns the last now."""
    times = [r["ROWTIME"] for r in sb.rows(SOURCE)]
    now = dt.datetime.fromtimestamp(min(times) / 1000, dt.UTC)
    end = dt.datetime.fromtimestamp(max(times) / 1000, dt.UTC) + dt.timedelta(seconds=1)
    ex = exporter(sb.url, root)
    while now < end:
        now = min(now + dt.timedelta(hours=hours), end)
        ex.export(TX, now)
    return now


def files_per_day(root: Path) -> dict[str, int]:
    doc = MetadataStore().load(layout.feed_dir(root, "stream", "tx"))
    assert isinstance(doc, StreamMetadata)
    return {p.path: len(p.files) for p in doc.partitions}


def on_disk(root: Path) -> set[str]:
    feed_dir = layout.feed_dir(root, "stream", "tx")
    return {p.relative_to(feed_dir).as_posix() for p in feed_dir.rglob("*.parquet")}


def summary(table: pa.Table) -> tuple[int, Decimal, set[str]]:
    ids = table.column("TRANSACTION_ID").to_pylist()
    assert len(ids) == len(set(ids)), "duplicated rows"
    return len(ids), pc.sum(table.column("AMOUNT")).as_py(), set(ids)


def truth(sb: Sandbox) -> tuple[int, Decimal, set[str]]:
    rows = sb.rows(SOURCE)
    return len(rows), sum((r["AMOUNT"] for r in rows), Decimal(0)), \
        {r["TRANSACTION_ID"] for r in rows}


def test_closed_days_become_one_file_with_every_row(sandbox: Sandbox, tmp_path: Path) -> None:
    """Each closed day's files become one file; rows, exact DECIMAL sum, ids and per-day
    counts are the source's; the open days are left alone; verify passes."""
    last = runs_over(sandbox, tmp_path)
    before = files_per_day(tmp_path)
    assert sum(n >= 2 for n in before.values()) >= 3
    cutoff = layout.retention_cutoff(last, 1, "UTC")
    result = compact_feed(LOCAL, tmp_path, TX, now=last, lock_wait=2, orphan_grace=3600)
    after = files_per_day(tmp_path)
    for day, count in before.items():
        closed = layout.partition_day(day) < cutoff
        assert after[day] == (1 if closed else count), day
    assert result.files_in == sum(n for d, n in before.items()
                                  if layout.partition_day(d) < cutoff and n >= 2)
    assert summary(read_listed(tmp_path, "stream", "tx")) == truth(sandbox)
    listed = read_listed(tmp_path, "stream", "tx")
    per_day = pc.value_counts(pc.strftime(listed.column("ROWTIME").cast(pa.timestamp("ms")),
                                          format="%Y-%m-%d")).to_pylist()
    expected: dict[str, int] = {}
    for r in sandbox.rows(SOURCE):
        day = dt.datetime.fromtimestamp(r["ROWTIME"] / 1000, dt.UTC).strftime("%Y-%m-%d")
        expected[day] = expected.get(day, 0) + 1
    assert {d["values"]: d["counts"] for d in per_day} == expected
    assert_consistent(tmp_path, "stream", "tx")
    name = next(n for n in on_disk(tmp_path) if "_c0001" in n)
    assert layout.is_compacted_file_name(name.rsplit("/", 1)[1])


def test_inputs_stay_until_the_grace_then_the_next_export_removes_them(
    sandbox: Sandbox, tmp_path: Path,
) -> None:
    """Retired inputs are hidden at once (renamed .<name>.retired: a *.parquet glob counts
    every row once) and stay on disk (surviving the next run's orphan cleanup) until
    orphan_grace after the swap; a later commit then drops and deletes them. DuckDB, reading
    only the listed files, counts every row once throughout."""
    last = runs_over(sandbox, tmp_path)
    files_before = on_disk(tmp_path)
    compact_feed(LOCAL, tmp_path, TX, now=last, lock_wait=2, orphan_grace=3600)
    feed_dir = layout.feed_dir(tmp_path, "stream", "tx")
    doc = json.loads((feed_dir / "_metadata.json").read_bytes())
    retired = {r["path"] for r in doc["retired"]}
    assert retired and retired <= files_before
    ex = exporter(sandbox.url, tmp_path)
    ex.orphan_grace = 3600
    # Hidden at once (no *.parquet glob sees a day twice), kept on disk within the grace.
    assert not retired & on_disk(tmp_path)
    hidden = {f"{p.rsplit('/', 1)[0]}/.{p.rsplit('/', 1)[1]}.retired" for p in retired}
    assert all((feed_dir / h).exists() for h in hidden)
    count = duckdb.sql(f"SELECT count(*) FROM read_parquet('{feed_dir}/**/*.parquet')").fetchall()
    assert count[0][0] == truth(sandbox)[0]
    ex.export(TX, last + dt.timedelta(minutes=30))  # within the grace: kept
    assert all((feed_dir / h).exists() for h in hidden)
    assert_consistent(tmp_path, "stream", "tx")
    ex.export(TX, last + dt.timedelta(hours=2))  # past it: dropped, then deleted
    assert not retired & on_disk(tmp_path)
    assert not any((feed_dir / h).exists() for h in hidden)
    assert "retired" not in json.loads((feed_dir / "_metadata.json").read_bytes())
    listed = [str(feed_dir / p) for p in on_disk(tmp_path)]
    count, total = duckdb.sql(
        f"SELECT count(*), sum(AMOUNT) FROM read_parquet({listed!r})").fetchall()[0]
    assert (count, total) == truth(sandbox)[:2]
    assert_consistent(tmp_path, "stream", "tx")


def test_a_late_file_in_a_compacted_day_is_compacted_again(
    sandbox: Sandbox, tmp_path: Path,
) -> None:
    """Exports go on after compaction: rows landing in a day already compacted (``--before``
    past the watermark's day) make a new file there, and the next compaction merges it."""
    last = runs_over(sandbox, tmp_path)
    day_after = layout.event_day(last) + dt.timedelta(days=1)
    compact_feed(LOCAL, tmp_path, TX, now=last, lock_wait=2, orphan_grace=0, before=day_after)
    open_day = layout.partition_path(last)
    assert files_per_day(tmp_path)[open_day] == 1
    ms = int(last.timestamp() * 1000)
    assert sandbox.generate(3, rowtime_ms=(ms + 1, ms + 1000)) == 3
    exporter(sandbox.url, tmp_path).export(TX, last + dt.timedelta(seconds=2))
    assert files_per_day(tmp_path)[open_day] == 2
    later = last + dt.timedelta(seconds=3)
    compact_feed(LOCAL, tmp_path, TX, now=later, lock_wait=2, orphan_grace=0, before=day_after)
    assert set(files_per_day(tmp_path).values()) == {1}
    assert summary(read_listed(tmp_path, "stream", "tx")) == truth(sandbox)
    assert_consistent(tmp_path, "stream", "tx")


def test_dry_run_changes_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    """--dry-run plans the same days a real run does and leaves every byte as it was."""
    last = runs_over(sandbox, tmp_path)
    feed_dir = layout.feed_dir(tmp_path, "stream", "tx")
    snapshot = {p: p.read_bytes() for p in feed_dir.rglob("*") if p.is_file()}
    dry = compact_feed(LOCAL, tmp_path, TX, now=last, lock_wait=2, orphan_grace=0, dry_run=True)
    assert {p: p.read_bytes() for p in feed_dir.rglob("*") if p.is_file()} == snapshot
    real = compact_feed(LOCAL, tmp_path, TX, now=last, lock_wait=2, orphan_grace=0)
    assert [d.partition for d in dry.days] == [d.partition for d in real.days]
    assert dry.files_in == real.files_in and dry.files_out == real.files_out


def test_a_table_feed_is_refused(tmp_path: Path) -> None:
    """Tables write each version whole: compaction refuses them with a clear error."""
    with pytest.raises(FeedError, match="table"):
        compact_feed(LOCAL, tmp_path, feed("t", "T", kind="table"), now=dt.datetime.now(dt.UTC),
                     lock_wait=1, orphan_grace=0)


def test_a_rebuild_during_the_grace_lists_each_row_once(sandbox: Sandbox, tmp_path: Path) -> None:
    """`repair --rebuild` while the replaced files are still on disk leaves them out (the
    compacted file's footer names them): the rebuilt document lists every row once."""
    last = runs_over(sandbox, tmp_path)
    compact_feed(LOCAL, tmp_path, TX, now=last, lock_wait=2, orphan_grace=3600)
    feed_dir = layout.feed_dir(tmp_path, "stream", "tx")
    # As a kill right after the swap leaves them (and an object store always): not hidden.
    for hidden in feed_dir.rglob(".*.retired"):
        hidden.rename(hidden.with_name(hidden.name[1:].removesuffix(".retired")))
    rebuilt = rebuild_stream(feed_dir, feed="tx", source=SOURCE)
    assert any("a compaction replaced" in w for w in rebuilt.warnings)
    tables = [pq.read_table(feed_dir / p.path / f.name)
              for p in rebuilt.doc.partitions for f in p.files]
    assert summary(pa.concat_tables(tables, promote_options="default")) == truth(sandbox)


def test_nested_columns_compact_with_every_value_kept(sandbox: Sandbox, tmp_path: Path) -> None:
    """TRANSACTION_STREAM's ARRAY, MAP and STRUCT columns: Arrow names a list's items ``item``
    in the decoder's schema and ``element`` in a Parquet file read back; compaction took that
    for a type change and compacted nothing. Now every row comes back, every value equal."""
    nested = feed("nested", "TRANSACTION_STREAM", settle_delay=0.0,
                  compaction=Compaction(after_days=1))
    times = [r["ROWTIME"] for r in sandbox.rows("TRANSACTION_STREAM")]
    now = dt.datetime.fromtimestamp(min(times) / 1000, dt.UTC)
    end = dt.datetime.fromtimestamp(max(times) / 1000, dt.UTC) + dt.timedelta(seconds=1)
    ex = exporter(sandbox.url, tmp_path)
    while now < end:
        now = min(now + dt.timedelta(hours=6), end)
        ex.export(nested, now)
    result = compact_feed(LOCAL, tmp_path, nested, now=now, lock_wait=2, orphan_grace=3600)
    assert result.files_in > result.files_out > 0
    assert_exactly_once(read_listed(tmp_path, "stream", "nested"),
                        sandbox.arrow("TRANSACTION_STREAM"))
    assert_consistent(tmp_path, "stream", "nested")
