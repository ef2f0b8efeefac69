"""How ``_metadata.json`` grows with the number of past one-minute runs, compaction on and off.

Documents are generated (not exported): N one-minute runs from 2025-01-01 00:00 UTC, each
adding one small file to the day of its minute, and the bounded ``exports`` history (the last
100 runs). *Off*: every file of every run stays listed. *On* (``compaction: {after: 1d}``,
the daemon's daily job): every day that ended more than a day before the last run is one
compacted file; the last two days keep their per-minute files (up to 2 x 1,440), and the
inputs of the last compaction (1,440) are still in ``retired`` (the worst case: within
``lake.orphan_grace`` of the swap). For each N: the document's size, the time to encode it
(``metadata_codec.encode``) and one ``MetadataStore.commit`` on the local disk (encode,
write, fsync, rename; best of 3).

    python -m benchmarks.metadata_growth                 # N = 1k, 10k, 100k, 525,600
    python -m benchmarks.metadata_growth --sizes 1000 10000
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import tempfile
import time
from pathlib import Path

from lakeexportd.lake import layout
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_codec import encode
from lakeexportd.lake.metadata_model import (
    ExportRecord,
    FileEntry,
    Partition,
    Retired,
    SchemaColumn,
    StreamMetadata,
    Window,
    iso_utc,
)
from lakeexportd.lake.storage import LOCAL

START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
MINUTE_MS = 60_000
SCHEMA = (SchemaColumn("ROWTIME", "BIGINT", "int64"),
          SchemaColumn("TRANSACTION_ID", "STRING", "string"),
          SchemaColumn("AMOUNT", "DECIMAL(10, 2)", "decimal128(10, 2)"))
RESULTS = Path(__file__).parent / "results"


def _minute_file(moment: dt.datetime) -> FileEntry:
    ms = int(moment.timestamp() * 1000)
    return FileEntry(layout.data_file_name(moment + dt.timedelta(seconds=30)), 120, 9_800,
                     ms, ms + MINUTE_MS - 1)


def _exports(runs: int) -> tuple[ExportRecord, ...]:
    out = []
    for i in range(max(0, runs - 100), runs):
        begin = START + dt.timedelta(minutes=i)
        ms = int(begin.timestamp() * 1000)
        out.append(ExportRecord(f"run-{i:07d}", iso_utc(begin), iso_utc(begin), 120, "success",
                                Window(ms, ms + MINUTE_MS), files=1, size_bytes=9_800))
    return tuple(out)


def document(runs: int, *, compaction: bool) -> StreamMetadata:
    """The document after ``runs`` one-minute runs (see the module doc)."""
    last = START + dt.timedelta(minutes=runs - 1)
    keep_from = layout.event_day(last) - dt.timedelta(days=1)  # after: 1d
    by_day: dict[dt.date, list[FileEntry]] = {}
    for i in range(runs):
        moment = START + dt.timedelta(minutes=i)
        day = moment.date()
        if compaction and day < keep_from:
            if day not in by_day:  # the day's one compacted file
                begin = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
                            .timestamp() * 1000)
                by_day[day] = [FileEntry(layout.compacted_file_name(
                    dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
                    + dt.timedelta(days=2, hours=1), 1), 172_800, 9_400_000,
                    begin, begin + 86_400_000 - 1)]
            continue
        by_day.setdefault(day, []).append(_minute_file(moment))
    retired: tuple[Retired, ...] = ()
    closed = [d for d in by_day if d < keep_from]
    if compaction and closed:
        newest = max(closed)
        since = iso_utc(dt.datetime(newest.year, newest.month, newest.day, tzinfo=dt.UTC)
                        + dt.timedelta(days=2, hours=1))
        retired = tuple(
            Retired(f"{layout.day_partition(newest)}/"
                    f"{_minute_file(dt.datetime(newest.year, newest.month, newest.day, tzinfo=dt.UTC) + dt.timedelta(minutes=m)).name}",  # noqa: E501
                    since) for m in range(1440))
    partitions = tuple(Partition(layout.day_partition(d), tuple(fs))
                       for d, fs in sorted(by_day.items()))
    exports = _exports(runs)
    return StreamMetadata(
        feed="tx", source="TX", last_export=exports[-1].finished, last_status="success",
        schema=SCHEMA, exports=exports, partitions=partitions,
        watermark_ms=int(last.timestamp() * 1000) + MINUTE_MS, retired=retired)


def measure(doc: StreamMetadata, workdir: Path) -> dict[str, float]:
    encode_s, commit_s = [], []
    for _ in range(3):
        started = time.perf_counter()
        data = encode(doc)
        encode_s.append(time.perf_counter() - started)
    feed_dir = workdir / "streams" / "tx"
    feed_dir.mkdir(parents=True, exist_ok=True)
    store = MetadataStore(LOCAL)
    for _ in range(3):
        store.load(feed_dir)
        started = time.perf_counter()
        store.commit(feed_dir, doc)
        commit_s.append(time.perf_counter() - started)
    return {"bytes": len(data), "encode_s": min(encode_s), "commit_s": min(commit_s),
            "files": sum(len(p.files) for p in doc.partitions), "retired": len(doc.retired)}


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 525_600])
    parser.add_argument("--out", type=Path, default=RESULTS / "metadata_growth.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            for on in (False, True):
                figures = measure(document(n, compaction=on), Path(tmp) / f"{n}-{on}")
                rows.append((n, "on" if on else "off", figures))
                print(f"N={n:>7} compaction {'on ' if on else 'off'}: "
                      f"{figures['files']:>7.0f} files listed, "
                      f"{figures['retired']:>4.0f} retired, {_size(figures['bytes']):>10}, "
                      f"encode {figures['encode_s'] * 1000:8.1f} ms, "
                      f"commit {figures['commit_s'] * 1000:8.1f} ms", flush=True)
    lines = [
        "# `_metadata.json` growth: N one-minute runs, compaction on and off",
        "",
        f"`python -m benchmarks.metadata_growth` on {platform.node()} ({platform.machine()}, "
        f"Python {platform.python_version()}), {dt.datetime.now(dt.UTC):%Y-%m-%d}. Documents are "
        "generated (module doc); commit = one `MetadataStore.commit` on local disk (encode, "
        "write, fsync, rename), best of 3.",
        "",
        "| runs (N) | compaction | files listed | retired | _metadata.json | encode | commit |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n, mode, f in rows:
        lines.append(f"| {n:,} | {mode} | {f['files']:,.0f} | {f['retired']:,.0f} | "
                     f"{_size(f['bytes'])} | {f['encode_s'] * 1000:,.1f} ms | "
                     f"{f['commit_s'] * 1000:,.1f} ms |")
    lines += ["", "Off grows linearly with N (every run's file stays listed). On is bounded "
              "by the open days (<= 2 x 1,440 per-minute files + 1,440 retired entries) plus one "
              "entry per closed day: it still grows by one small entry per day (~365 a year).", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
