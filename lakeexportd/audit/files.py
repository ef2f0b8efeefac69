"""Which files hold a feed's committed rows: what ``lakeexportd files FEED`` prints.

On an object store a reader that globs ``year=*/month=*/day=*/*.parquet`` can also see the
objects of a run that has not committed yet (they are written under their final names), and a
table's ``version=vN/`` while it fills. ``_metadata.json`` is the truth: this lists exactly
what it lists (streams: every partition's files; tables: one version, the current one unless
asked), as the URLs or paths a reader opens. Read-only.

Time travel (``--as-of TIME``) goes by commit time. A table: the newest kept version committed
at or before TIME. A stream: the listed files whose ``added`` is at or before TIME; files
removed by ``retention_days`` (or replaced by a backfill or compaction) are gone, so a past
state is only as complete as what is still listed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path, PurePath

from lakeexportd.audit.history import version_time
from lakeexportd.errors import FeedError
from lakeexportd.lake import delta
from lakeexportd.lake.metadata_model import (
    FeedMetadata,
    FileEntry,
    StreamMetadata,
    TableMetadata,
    Version,
    added_time,
    listed_files,
    parse_iso,
)
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
            why = (f"the newest is {doc.last_version}" if number > doc.last_version
                   else "older versions were removed by retention_versions")
            raise FeedError(f"feed {doc.feed!r} keeps no version {number} (kept: {kept}; "
                            f"{why})")
        return found
    if as_of is not None:
        older = [v for v in doc.versions if version_time(doc, v) <= as_of]
        if not older:
            raise FeedError(
                f"feed {doc.feed!r} has no version committed at or before {_shown(as_of)}"
                f" (kept: {kept}; older versions were removed by retention_versions; "
                "`lakeexportd history` lists the commits)"
            )
        return max(older, key=lambda v: v.version)
    current = doc.current
    if current is None:
        raise FeedError(f"feed {doc.feed!r} has no committed version yet")
    return current


def _shown(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"


def _stream_files(doc: StreamMetadata, version: int | None,
                  as_of: dt.datetime | None) -> list[tuple[str, FileEntry]]:
    if version is not None:
        raise FeedError(f"feed {doc.feed!r} is a Parquet stream: it has no numbered versions; "
                        "use --as-of TIME (`lakeexportd history` lists its commit times)")
    listed = listed_files(doc)
    if as_of is None:
        return listed
    commits = [t for _, f in listed if (t := added_time(f)) is not None]
    commits += [parse_iso(e.finished) for e in doc.exports if e.status == "success"]
    if not commits or as_of < min(commits):
        first = f"its first known commit is at {_shown(min(commits))}" if commits else \
            "it has no commit yet"
        raise FeedError(f"feed {doc.feed!r} has no commit at or before {_shown(as_of)}: "
                        f"{first} (older files, if any, were removed by retention_days)")
    return [(d, f) for d, f in listed if (t := added_time(f)) is not None and t <= as_of]


def committed_files(
    storage: Storage, feed_dir: PurePath, doc: FeedMetadata | None, *,
    version: int | None = None, as_of: dt.datetime | None = None,
) -> list[CommittedFile]:
    """The files ``doc`` lists (a table: one version) as ``storage`` shows them; a Delta
    feed's are those of its log's version (current, ``version`` or the one at ``as_of``)."""
    if delta.is_delta(storage, feed_dir):
        return _delta_files(storage, feed_dir, version, as_of)
    if doc is None:
        return []
    if isinstance(doc, StreamMetadata):
        chosen = _stream_files(doc, version, as_of)
    else:
        table_version = _version(doc, version, as_of)
        chosen = [(table_version.path, f) for f in table_version.files]
    return [
        CommittedFile(storage.show(feed_dir / directory / f.name), directory, f.records,
                      f.size_bytes)
        for directory, f in chosen
    ]


def _delta_files(storage: Storage, feed_dir: PurePath, version: int | None,
                 as_of: dt.datetime | None) -> list[CommittedFile]:
    feed = delta.DeltaFeed(storage, Path(feed_dir), feed_dir.name)
    if as_of is not None:
        if as_of.microsecond == 0:  # whole seconds, as `history` prints: to its last ms
            as_of += dt.timedelta(milliseconds=999)
        table = feed.load_as_of(as_of)
    else:
        latest = feed.load()
        if latest is None:
            return []
        if version is not None and not 0 <= version <= latest.version():
            raise FeedError(f"feed {feed_dir.name!r} has no Delta version {version} (the "
                            f"newest is {latest.version()}; `lakeexportd history` lists them)")
        chosen = latest if version is None else feed.load(version)
        assert chosen is not None
        table = chosen
    out = [CommittedFile(storage.show(feed_dir / f.path),
                         f.partition or f.path.rpartition("/")[0], f.records, f.size_bytes)
           for f in delta.logged_files(feed, table)]
    return sorted(out, key=lambda f: f.url)
