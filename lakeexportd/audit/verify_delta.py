"""Reconcile a Delta feed with its log (``lakeexportd verify`` on ``format: delta`` feeds).

The Delta log is the commit point (DESIGN.md section 12), so the log is the truth here:

- every file the log's current version lists exists with the logged size and the logged row
  count in its Parquet footer (``deep``: every row group decodes with checksums verified);
- ``_metadata.json`` says what the log says: the same files with the same records and bytes,
  the same totals, a stream's watermark equal to the feed's transaction version in the log, a
  table's current version the newest snapshot, and the Delta version it summarises;
- files in the table's folder that no commit lists: lakeexportd's own (an interrupted run's)
  are removed by ``lakeexportd repair``; any other file is reported and never touched.

Files that older versions still read (time travel within retention) are neither listed nor
untracked: they are not reported. Read-only: it reports, it never repairs.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from lakeexportd.audit.verify import Mismatch, damaged
from lakeexportd.errors import LakeStateError
from lakeexportd.lake import delta, layout
from lakeexportd.lake.delta import DeltaFeed
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import (
    FeedMetadata,
    StreamMetadata,
    TableMetadata,
    listed_files,
)
from lakeexportd.lake.storage import Storage


def _fix(feed: str) -> str:
    return f"`lakeexportd repair {feed}` rewrites _metadata.json from the Delta log"


def expected_summary(feed: DeltaFeed, table: delta.Table, doc: FeedMetadata) -> FeedMetadata:
    """``doc`` as the log says it should read (a table keeps as many versions as ``doc``)."""
    if isinstance(doc, StreamMetadata):
        return delta.stream_summary(feed, table, doc)
    return delta.table_summary(feed, table, doc, keep=max(len(doc.versions), 1))


def summary_mismatches(feed: str, doc: FeedMetadata, want: FeedMetadata) -> list[Mismatch]:
    """How ``doc`` (``_metadata.json``) differs from ``want`` (the log's summary)."""
    out: list[Mismatch] = []
    have_files = {(d, f.name): (f.records, f.size_bytes) for d, f in listed_files(doc)}
    want_files = {(d, f.name): (f.records, f.size_bytes) for d, f in listed_files(want)}
    for key in sorted(have_files.keys() - want_files.keys()):
        out.append(Mismatch(feed, "/".join(key), "listed in _metadata.json but not in the "
                            f"Delta log's current state; {_fix(feed)}"))
    for key in sorted(want_files.keys() - have_files.keys()):
        out.append(Mismatch(feed, "/".join(key), "in the Delta log but not listed in "
                            f"_metadata.json; {_fix(feed)}"))
    for key in sorted(have_files.keys() & want_files.keys()):
        (rows, size), (log_rows, log_size) = have_files[key], want_files[key]
        if (rows, size) != (log_rows, log_size):
            out.append(Mismatch(feed, "/".join(key), f"_metadata.json says {rows} rows, {size} "
                                f"bytes; the Delta log {log_rows} rows, {log_size} bytes; "
                                f"{_fix(feed)}"))
    facts = [("total_records", doc.total_records, want.total_records),
             ("total_size_bytes", doc.total_size_bytes, want.total_size_bytes),
             ("delta_version", doc.extra.get("delta_version"), want.extra.get("delta_version"))]
    if isinstance(doc, StreamMetadata) and isinstance(want, StreamMetadata):
        facts.append(("watermark", doc.watermark_ms, want.watermark_ms))
    if isinstance(doc, TableMetadata) and isinstance(want, TableMetadata):
        facts.append(("current_version", doc.current_version, want.current_version))
    for fact, have, log_value in facts:
        if have != log_value:
            out.append(Mismatch(feed, layout.METADATA_NAME, f"{fact} is {have}, the Delta log "
                                f"says {log_value}; {_fix(feed)}"))
    return out


def check_log_files(feed: DeltaFeed, table: delta.Table, *, deep: bool) -> list[Mismatch]:
    """The current version's files: present, with the logged size and row count."""
    storage, name = feed.storage, feed.feed
    out: list[Mismatch] = []
    for row in feed.active_files(table).to_pylist():
        rel = feed.relative(str(row["path"]))
        path = feed.feed_dir / rel
        try:
            size = storage.size(path)
        except FileNotFoundError:
            out.append(Mismatch(name, rel, f"listed by the Delta log (version {table.version()}) "
                                "but missing: readers of the table fail on it; restore the "
                                "file from a backup"))
            continue
        if size != row["size_bytes"]:
            out.append(Mismatch(name, rel, f"size {size} bytes, the Delta log says "
                                f"{row['size_bytes']}"))
        logged = row.get("num_records")
        try:
            with storage.open_read(path) as source:
                rows = pq.ParquetFile(source).metadata.num_rows
        except Exception as exc:  # pyarrow raises several types for damaged files
            out.append(Mismatch(name, rel, f"unreadable Parquet footer ({exc})"))
            continue
        if logged is not None and rows != logged:
            out.append(Mismatch(name, rel, f"{rows} rows in the footer, the Delta log says "
                                f"{logged}"))
        elif deep and (damage := damaged(storage, path)) is not None:
            out.append(Mismatch(name, rel, damage))
    return out


def untracked(feed: DeltaFeed, table: delta.Table) -> list[Mismatch]:
    """Files in the table's folder no commit lists (a dry vacuum: nothing is deleted)."""
    found = delta.vacuum(feed, table, retention_s=0.0, dry_run=True)
    when = (" once older than lake.orphan_grace (a paused writer may still commit younger "
            "ones)") if feed.storage.leases else ""
    out = [Mismatch(feed.feed, feed.relative(p), "in the table's folder but no Delta commit "
                    f"lists it (left by an interrupted run; `lakeexportd repair {feed.feed}` "
                    f"removes it{when}, and its rows are exported again)")
           for p in found.leftovers]
    out += [Mismatch(feed.feed, feed.relative(p), "in the table's folder, not written by "
                     "lakeexportd and listed by no Delta commit; lakeexportd never deletes it: "
                     "move it out of the table's folder")
            for p in found.foreign]
    return out


def verify_delta_feed(root: Path, kind: layout.Kind, name: str, *, deep: bool = False,
                      storage: Storage) -> list[Mismatch]:
    """Every disagreement between a Delta feed's log, its files and ``_metadata.json``."""
    feed_dir = layout.feed_dir(root, kind, name)
    feed = DeltaFeed(storage, feed_dir, name)
    problems: list[Mismatch] = []
    try:
        doc = MetadataStore(storage).load(feed_dir)
    except LakeStateError as exc:
        doc = None
        problems.append(Mismatch(name, layout.METADATA_NAME, f"unreadable ({exc}); {_fix(name)}"))
    table = feed.load()
    if table is None:
        if doc is not None and listed_files(doc):
            problems.append(Mismatch(name, delta.LOG_DIR, f"missing, while _metadata.json lists "
                                     f"{len(listed_files(doc))} files: the table cannot be read; "
                                     "restore _delta_log from a backup"))
        return problems
    problems += check_log_files(feed, table, deep=deep)
    if doc is None and not problems:
        problems.append(Mismatch(name, layout.METADATA_NAME, f"missing; {_fix(name)}"))
    elif doc is not None:
        problems += summary_mismatches(name, doc, expected_summary(feed, table, doc))
    problems += untracked(feed, table)
    return problems


def is_delta_feed(root: Path, kind: layout.Kind, name: str, *, storage: Storage) -> bool:
    """Whether the feed's folder holds a Delta log (whatever the config says)."""
    return delta.is_delta(storage, layout.feed_dir(root, kind, name))
