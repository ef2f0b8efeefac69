"""Reconcile a feed's files with its ``_metadata.json`` (offline half of ``lakeexportd verify``).

Every listed file must exist with the listed size and the listed row count (read from its
Parquet footer); no data file, temp file or version directory may exist unlisted; totals are
recomputed by construction. ``deep`` also decodes every row group with page checksums verified,
which finds damaged pages the footer cannot show. Read-only: it reports, it never repairs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from lakeexportd.lake import layout
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import FeedMetadata, FileEntry, StreamMetadata, TableMetadata


@dataclass(frozen=True)
class Mismatch:
    """One way the lake disagrees with its metadata."""

    feed: str
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.feed}: {self.path}: {self.problem}"


def listed_files(doc: FeedMetadata) -> list[tuple[str, FileEntry]]:
    """(relative directory, entry) of every file the document lists."""
    if isinstance(doc, StreamMetadata):
        return [(p.path, f) for p in doc.partitions for f in p.files]
    return [(v.path, f) for v in doc.versions for f in v.files]


def check_files(feed_dir: Path, doc: FeedMetadata, *, deep: bool = False) -> list[Mismatch]:
    """Listed files that are missing, or whose size or footer row count differ (``deep``: or
    whose pages fail their checksum or do not decode)."""
    problems = []
    for directory, entry in listed_files(doc):
        path = feed_dir / directory / entry.name
        rel = f"{directory}/{entry.name}"
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            problems.append(Mismatch(doc.feed, rel, "listed but missing: its rows are not in "
                                     "the lake; restore the file from a backup, or re-export "
                                     f"them with `lakeexportd backfill {doc.feed}` (streams)"))
            continue
        if size != entry.size_bytes:
            problems.append(
                Mismatch(doc.feed, rel, f"size {size} bytes, metadata says {entry.size_bytes}")
            )
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # pyarrow raises several types for damaged files
            problems.append(Mismatch(doc.feed, rel, f"unreadable Parquet footer ({exc})"))
            continue
        if rows != entry.records:
            problems.append(
                Mismatch(doc.feed, rel, f"{rows} rows in the footer, metadata says {entry.records}")
            )
        elif deep and (damage := _damaged(path)) is not None:
            problems.append(Mismatch(doc.feed, rel, damage))
    return problems


def _damaged(path: Path) -> str | None:
    """Why a file's data pages cannot be read back, or ``None`` when every row group decodes."""
    group = 0
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True)
        for group in range(parquet.num_row_groups):
            parquet.read_row_group(group)
    except Exception as exc:  # pyarrow raises OSError, ArrowInvalid and others for bad pages
        return (f"damaged data in row group {group} ({exc}); restore the file from a backup, "
                "or re-export its rows with `lakeexportd backfill` over its run's window")
    return None


def unlisted(feed_dir: Path, doc: FeedMetadata | None) -> list[Path]:
    """Data files, temps and version directories under ``feed_dir`` that ``doc`` does not list."""
    listed = {f"{d}/{e.name}" for d, e in listed_files(doc)} if doc else set()
    versions = {v.path for v in doc.versions} if isinstance(doc, TableMetadata) else set()
    found = []
    for dirpath, dirnames, filenames in os.walk(feed_dir):
        rel_dir = Path(dirpath).relative_to(feed_dir).as_posix()
        if rel_dir == "." or rel_dir == "":
            for name in dirnames:
                if layout.version_number(name) is not None and name not in versions:
                    found.append(Path(dirpath) / name)
            dirnames[:] = [d for d in dirnames if layout.version_number(d) is None or d in versions]
        for name in filenames:
            rel = f"{rel_dir}/{name}" if rel_dir not in (".", "") else name
            if name in (layout.METADATA_NAME, layout.LOCK_NAME):
                continue
            if layout.is_temp_name(name) or (name.endswith(".parquet") and rel not in listed):
                found.append(Path(dirpath) / name)
    return sorted(found)


def verify_feed(
    root: Path, kind: layout.Kind, feed: str, *, deep: bool = False
) -> list[Mismatch]:
    """Every disagreement between a feed's files and its metadata (empty when consistent)."""
    feed_dir = layout.feed_dir(root, kind, feed)
    doc = MetadataStore().load(feed_dir)
    problems: list[Mismatch] = []
    if doc is not None:
        problems += check_files(feed_dir, doc, deep=deep)
        if isinstance(doc, TableMetadata) and doc.versions and doc.current is None:
            problems.append(
                Mismatch(feed, "_metadata.json", f"current_version {doc.current_version} unlisted")
            )
    leftovers = unlisted(feed_dir, doc) if feed_dir.exists() else []
    if doc is None and any(not layout.is_temp_name(p.name) for p in leftovers):
        return [Mismatch(feed, layout.METADATA_NAME,
                         f"missing while {len(leftovers)} data files exist; nothing will delete "
                         f"them: rebuild it with `lakeexportd repair --rebuild {feed}`")]
    for path in leftovers:
        problems.append(
            Mismatch(feed, path.relative_to(feed_dir).as_posix(),
                     f"on disk but not listed (left by an interrupted run; `lakeexportd repair "
                     f"{feed}` removes it, and its rows are exported again)")
        )
    staging = layout.staging_dir(root, feed)
    if kind == "table" and staging.exists() and any(staging.iterdir()):
        problems.append(Mismatch(feed, str(staging), "staging leftovers of an interrupted run"))
    return problems
