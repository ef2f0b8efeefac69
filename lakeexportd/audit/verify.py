"""Reconcile a feed's files with its ``_metadata.json`` (offline half of ``lakeexportd verify``).

Every listed file must exist with the listed size and the listed row count (read from its
Parquet footer); no data file, temp file or version directory may exist unlisted; totals are
recomputed by construction. ``deep`` also decodes every row group with page checksums verified,
which finds damaged pages the footer cannot show. Read-only: it reports, it never repairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from lakeexportd.lake import layout
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import (
    FeedMetadata,
    TableMetadata,
    kept_paths,
    listed_files,
)
from lakeexportd.lake.storage import LOCAL, Storage


@dataclass(frozen=True)
class Mismatch:
    """One way the lake disagrees with its metadata."""

    feed: str
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.feed}: {self.path}: {self.problem}"


def check_files(
    feed_dir: Path, doc: FeedMetadata, *, deep: bool = False, storage: Storage = LOCAL
) -> list[Mismatch]:
    """Listed files that are missing, or whose size or footer row count differ (``deep``: or
    whose pages fail their checksum or do not decode)."""
    problems = []
    for directory, entry in listed_files(doc):
        path = feed_dir / directory / entry.name
        rel = f"{directory}/{entry.name}"
        try:
            size = storage.size(path)
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
            with storage.open_read(path) as source:
                rows = pq.ParquetFile(source).metadata.num_rows
        except Exception as exc:  # pyarrow raises several types for damaged files
            problems.append(Mismatch(doc.feed, rel, f"unreadable Parquet footer ({exc})"))
            continue
        if rows != entry.records:
            problems.append(
                Mismatch(doc.feed, rel, f"{rows} rows in the footer, metadata says {entry.records}")
            )
        elif deep and (damage := damaged(storage, path)) is not None:
            problems.append(Mismatch(doc.feed, rel, damage))
    return problems


def damaged(storage: Storage, path: Path) -> str | None:
    """Why a file's data pages cannot be read back, or ``None`` when every row group decodes."""
    group = 0
    try:
        with storage.open_read(path) as source:
            parquet = pq.ParquetFile(source, page_checksum_verification=True)
            for group in range(parquet.num_row_groups):
                parquet.read_row_group(group)
    except Exception as exc:  # pyarrow raises OSError, ArrowInvalid and others for bad pages
        return (f"damaged data in row group {group} ({exc}); restore the file from a backup, "
                "or re-export its rows with `lakeexportd backfill` over its run's window")
    return None


def unlisted(
    feed_dir: Path, doc: FeedMetadata | None, *, storage: Storage = LOCAL
) -> list[Path]:
    """Data files, temps and version directories under ``feed_dir`` that ``doc`` does not list."""
    listed = kept_paths(doc)  # retired compaction inputs wait out their grace
    versions = {v.path for v in doc.versions} if isinstance(doc, TableMetadata) else set()
    found = []
    for entry in storage.list_dir(feed_dir):
        if entry.is_dir and layout.version_number(entry.name) is not None \
                and entry.name not in versions:
            found.append(feed_dir / entry.name)  # a whole unlisted version: its files not listed
        elif entry.is_dir:
            found += _unlisted_files(storage, feed_dir, feed_dir / entry.name, listed)
        elif entry.name not in (layout.METADATA_NAME, layout.LOCK_NAME, layout.LEASE_NAME) and (
            layout.is_temp_name(entry.name)
            or (entry.name.endswith(".parquet") and entry.name not in listed)
        ):
            found.append(feed_dir / entry.name)
    return sorted(found)


def _unlisted_files(
    storage: Storage, feed_dir: Path, directory: Path, listed: set[str]
) -> list[Path]:
    found = []
    for entry in storage.walk_files(directory):
        path = Path(entry.path)
        rel = path.relative_to(feed_dir).as_posix()
        if layout.is_temp_name(entry.name) or (entry.name.endswith(".parquet")
                                               and rel not in listed):
            found.append(path)
    return found


def verify_feed(
    root: Path, kind: layout.Kind, feed: str, *, deep: bool = False, storage: Storage = LOCAL
) -> list[Mismatch]:
    """Every disagreement between a feed's files and its metadata (empty when consistent)."""
    feed_dir = layout.feed_dir(root, kind, feed)
    doc = MetadataStore(storage).load(feed_dir)
    problems: list[Mismatch] = []
    if doc is not None:
        problems += check_files(feed_dir, doc, deep=deep, storage=storage)
        if isinstance(doc, TableMetadata) and doc.versions and doc.current is None:
            problems.append(
                Mismatch(feed, "_metadata.json", f"current_version {doc.current_version} unlisted")
            )
    leftovers = unlisted(feed_dir, doc, storage=storage)
    if doc is None and any(not layout.is_temp_name(p.name) for p in leftovers):
        return [Mismatch(feed, layout.METADATA_NAME,
                         f"missing while {len(leftovers)} data files exist; nothing will delete "
                         f"them: rebuild it with `lakeexportd repair --rebuild {feed}`")]
    when = (" once older than lake.orphan_grace (a paused writer may still commit younger "
            "ones)") if storage.leases else ""
    for path in leftovers:
        problems.append(
            Mismatch(feed, path.relative_to(feed_dir).as_posix(),
                     f"on disk but not listed (left by an interrupted run; `lakeexportd repair "
                     f"{feed}` removes it{when}, and its rows are exported again)")
        )
    staging = layout.staging_dir(root, feed)
    if kind == "table" and storage.list_dir(staging):
        problems.append(Mismatch(feed, str(staging), "staging leftovers of an interrupted run"))
    return problems
