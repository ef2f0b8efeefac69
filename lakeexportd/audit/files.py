"""Which files hold a feed's committed rows: what ``lakeexportd files FEED`` prints.

On an object store a reader that globs ``year=*/month=*/day=*/*.parquet`` can also see the
objects of a run that has not committed yet (they are written under their final names), and a
table's ``version=vN/`` while it fills. ``_metadata.json`` is the truth: this lists exactly
what it lists (streams: every partition's files; tables: one version, the current one unless
asked), as the URLs or paths a reader opens. Read-only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import PurePath

from lakeexportd.errors import FeedError
from lakeexportd.lake.metadata_model import FeedMetadata, StreamMetadata, TableMetadata, Version
from lakeexportd.lake.storage import Storage


@dataclass(frozen=True)
class CommittedFile:
    """One committed data file: where a reader opens it, and what the metadata says of it."""

    url: str
    partition: str  # ``year=…/month=…/day=…`` or ``version=vN``
    records: int
    size_bytes: int


def _version(doc: TableMetadata, number: int | None, as_of: dt.datetime | None) -> Version:
    kept = ", ".join(str(v.version) for v in doc.versions) or "none"
    if number is not None:
        found = next((v for v in doc.versions if v.version == number), None)
        if found is None:
            raise FeedError(f"feed {doc.feed!r} keeps no version {number} (kept: {kept})")
        return found
    if as_of is not None:
        older = [v for v in doc.versions if _parse(v.created) <= as_of]
        if not older:
            raise FeedError(
                f"feed {doc.feed!r} has no version created at or before {as_of:%Y-%m-%dT%H:%M:%SZ}"
                f" (kept: {kept}; older versions were pruned by retention_versions)"
            )
        return max(older, key=lambda v: v.version)
    current = doc.current
    if current is None:
        raise FeedError(f"feed {doc.feed!r} has no committed version yet")
    return current


def _parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def committed_files(
    storage: Storage, feed_dir: PurePath, doc: FeedMetadata, *,
    version: int | None = None, as_of: dt.datetime | None = None,
) -> list[CommittedFile]:
    """The files ``doc`` lists (a table: one version) as ``storage`` shows them."""
    if isinstance(doc, StreamMetadata):
        if version is not None or as_of is not None:
            raise FeedError(f"feed {doc.feed!r} is a stream: --version and --as-of choose a "
                            "table version; a stream's files are all current")
        groups = [(p.path, p.files) for p in doc.partitions]
    else:
        chosen = _version(doc, version, as_of)
        groups = [(chosen.path, chosen.files)]
    return [
        CommittedFile(storage.show(feed_dir / directory / f.name), directory, f.records,
                      f.size_bytes)
        for directory, files in groups for f in files
    ]
