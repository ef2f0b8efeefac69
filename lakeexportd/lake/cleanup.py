"""Deleting from the lake: orphans of interrupted runs, pruned table versions, expired days.

Everything here runs under the feed lock and only after (or instead of) a metadata commit:
``_metadata.json`` decides what is data, so a crash between the commit and the deletes only
leaves unlisted files for the next sweep. On a local lake the flock excludes every other
writer, so a sweep removes whatever is unlisted (``remove_orphans``). On an object store a
writer that lost its lease while paused may still commit what it wrote, so a sweep removes
only what is older than ``orphan_grace`` (``sweep``), and a failed run removes at once only
the objects it created itself (``remove_own``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lakeexportd.errors import LakeStateError
from lakeexportd.failpoints import failpoint
from lakeexportd.lake import layout
from lakeexportd.lake.metadata_model import (
    FeedMetadata,
    Partition,
    Retired,
    StreamMetadata,
    Version,
    kept_paths,
)
from lakeexportd.lake.storage import LOCAL, Storage

_YEAR = re.compile(r"year=\d{4}")
_MONTH = re.compile(r"month=\d{2}")
_DAY = re.compile(r"day=\d{2}")


def _subdirs(storage: Storage, directory: Path, pattern: re.Pattern[str]) -> list[Path]:
    return [Path(e.path) for e in storage.list_dir(directory)
            if e.is_dir and pattern.fullmatch(e.name)]


def _names(storage: Storage, directory: Path) -> list[str]:
    return [e.name for e in storage.list_dir(directory)]


def _remove(storage: Storage, path: Path, base: Path, *, tree: bool = False) -> None:
    """Remove one file (or, with ``tree``, a directory tree), refusing anything outside ``base``."""
    storage.check_inside(base, path.parent)
    if tree:
        storage.delete_tree(path)
    else:
        storage.delete(path)


@dataclass(frozen=True)
class Found:
    """One unlisted thing: a file, or a folder (version, staging); ``modified_ns`` is the
    store's last-modified time (epoch ns) of the file, or of a folder's newest object."""

    path: Path
    modified_ns: int

    def age_s(self, now: float) -> float:
        return now - self.modified_ns / 1e9


@dataclass
class Sweep:
    """What one sweep removed (or, dry, would remove) and what it kept for the grace."""

    removed: list[Path] = field(default_factory=list)
    kept: list[tuple[Path, float]] = field(default_factory=list)  # (path, age in seconds)


def _newest_ns(storage: Storage, directory: Path) -> int:
    return max((e.mtime_ns for e in storage.walk_files(directory)), default=0)


def _stream_orphans(
    storage: Storage, feed_dir: Path, doc: StreamMetadata | None
) -> tuple[list[Found], list[Found]]:
    listed = kept_paths(doc)
    temps, data = [], []
    for year in _subdirs(storage, feed_dir, _YEAR):
        for month in _subdirs(storage, year, _MONTH):
            for day in _subdirs(storage, month, _DAY):
                partition = f"{year.name}/{month.name}/{day.name}"
                for entry in storage.list_dir(day):
                    if entry.is_dir:
                        continue  # not a name lakeexportd writes: never touched
                    if layout.is_temp_name(entry.name):
                        temps.append(Found(day / entry.name, entry.mtime_ns))
                    elif (layout.is_data_file_name(entry.name)
                          and f"{partition}/{entry.name}" not in listed):
                        data.append(Found(day / entry.name, entry.mtime_ns))
    return temps, data


def _table_orphans(
    storage: Storage, feed_dir: Path, doc: FeedMetadata | None
) -> tuple[list[Found], list[Found], list[Found]]:
    listed = {v.path: {f.name for f in v.files} for v in getattr(doc, "versions", ())}
    temps, data, versions = [], [], []
    for entry in storage.list_dir(feed_dir):
        if not entry.is_dir or layout.version_number(entry.name) is None:
            continue
        path = feed_dir / entry.name
        if entry.name not in listed:
            versions.append(Found(path, _newest_ns(storage, path)))
            continue
        for item in storage.list_dir(path):
            if item.is_dir:
                continue
            if layout.is_temp_name(item.name):
                temps.append(Found(path / item.name, item.mtime_ns))
            elif layout.is_snapshot_file_name(item.name) and item.name not in listed[entry.name]:
                data.append(Found(path / item.name, item.mtime_ns))
    return temps, data, versions


def remove_orphans(
    feed_dir: Path,
    doc: FeedMetadata | None,
    *,
    kind: layout.Kind,
    staging_dir: Path | None = None,
    dry_run: bool = False,
    storage: Storage = LOCAL,
) -> list[Path]:
    """Remove (or with ``dry_run`` only list) every data file and dir ``doc`` does not list,
    whatever its age (a local lake: the feed's flock excludes every other writer)."""
    return sweep(feed_dir, doc, kind=kind, staging_dir=staging_dir, dry_run=dry_run,
                 storage=storage).removed


def sweep(
    feed_dir: Path,
    doc: FeedMetadata | None,
    *,
    kind: layout.Kind,
    staging_dir: Path | None = None,
    dry_run: bool = False,
    storage: Storage = LOCAL,
    grace: float = 0.0,
    now: float | None = None,
) -> Sweep:
    """Remove (or with ``dry_run`` only list) what ``doc`` does not list and was last
    modified at least ``grace`` seconds before ``now`` (epoch seconds, default: this host's
    clock against the store's last-modified times); younger things are kept and reported.

    ``grace`` is for object stores, where a writer that lost its lease while paused may still
    be about to commit the objects it wrote (DESIGN.md section 11). Never touches
    ``_metadata.json``, the lock or lease, names it does not recognise, or anything outside
    ``feed_dir`` and ``staging_dir``.
    """
    if doc is not None and doc.kind != kind:
        raise LakeStateError(f"{feed_dir}: metadata says kind {doc.kind!r}, expected {kind!r}")
    now = time.time() if now is None else now
    try:
        temps: list[Found] = []
        data: list[Found] = []
        versions: list[Found] = []
        if kind == "stream":
            stream_doc = doc if isinstance(doc, StreamMetadata) else None
            temps, data = _stream_orphans(storage, feed_dir, stream_doc)
        else:
            temps, data, versions = _table_orphans(storage, feed_dir, doc)
        meta_tmp = feed_dir / layout.temp_name(layout.METADATA_NAME)
        if storage.exists(meta_tmp):  # local lakes only (object stores PUT in one step)
            temps.insert(0, Found(meta_tmp, 0))
        staging: list[Found] = []
        if staging_dir is not None and storage.exists(staging_dir):
            # Empty after a good publish: nothing to report (and removed unless dry_run).
            if storage.list_dir(staging_dir):
                staging = [Found(staging_dir, _newest_ns(storage, staging_dir))]
            elif not dry_run:
                storage.remove_dir(staging_dir)
        if doc is None and (data or versions):
            raise MetadataMissingError(feed_dir, len(data) + len(versions))
        result = Sweep()

        def due(found: list[Found]) -> list[Path]:
            old = []
            for item in found:
                age = item.age_s(now)
                if grace > 0 and age < grace:
                    result.kept.append((item.path, age))
                else:
                    old.append(item.path)
            return old

        temp_paths, data_paths = due(temps), due(data)
        version_paths, staging_paths = due(versions), due(staging)
        result.removed = temp_paths + data_paths + version_paths + staging_paths
        if dry_run or not result.removed:
            return result
        failpoint("cleanup.before")
        for path in temp_paths:
            _remove(storage, path, feed_dir)
            failpoint("cleanup.after_temp")
        for path in data_paths:
            _remove(storage, path, feed_dir)
            failpoint("cleanup.after_data_file")
        for path in version_paths:
            _remove_version(storage, path, feed_dir)
            failpoint("cleanup.after_version_dir")
        if staging_dir is not None and staging_paths:
            _remove(storage, staging_dir, staging_dir.parent, tree=True)
            failpoint("cleanup.after_staging")
        if kind == "stream" and storage.exists(feed_dir):
            _remove_empty_partitions(storage, feed_dir, doc)
            failpoint("cleanup.after_empty_dirs")
        return result
    except OSError as exc:
        raise LakeStateError(f"cannot clean up {feed_dir}: {exc}") from exc


def _remove_version(storage: Storage, path: Path, feed_dir: Path) -> None:
    """Remove a version folder's snapshot and temp files, then the folder if that emptied it
    (a name lakeexportd does not write stays, and with it the folder)."""
    storage.check_inside(feed_dir, path)
    for entry in storage.list_dir(path):
        if not entry.is_dir and (layout.is_snapshot_file_name(entry.name)
                                 or layout.is_temp_name(entry.name)):
            storage.delete(path / entry.name)
    storage.remove_dir(path)


def remove_own(
    feed_dir: Path, doc: FeedMetadata | None, created: Iterable[Path], *, storage: Storage
) -> list[Path]:
    """Remove the objects of ``created`` that ``doc`` (freshly loaded) does not list: ones
    this process knows to be its own to remove (a failed run's uploads, the files its own
    commit dropped); nothing else, whatever its age."""
    listed = kept_paths(doc)
    removed = []
    try:
        for path in created:
            storage.check_inside(feed_dir, path.parent)
            relative = path.relative_to(feed_dir).as_posix()
            if relative not in listed and storage.delete(path):
                removed.append(path)
    except OSError as exc:
        raise LakeStateError(f"cannot remove the files of a failed run in {feed_dir}: "
                             f"{exc} (removed after orphan_grace by a later run or repair)"
                             ) from exc
    return removed


class MetadataMissingError(LakeStateError):
    """Data in a feed folder that has no ``_metadata.json``: never cleaned, only rebuilt.

    Every run commits an empty document before it writes its first data file, so data without
    a document is not an interrupted run's leftover: the document was deleted or lost.
    """

    def __init__(self, feed_dir: Path, count: int) -> None:
        self.feed_dir = feed_dir
        super().__init__(
            f"{feed_dir} holds {count} data file(s) or version folder(s) but no "
            f"{layout.METADATA_NAME}; lakeexportd deletes only what it can prove is its own "
            "leftover, so nothing was changed and the feed stays stopped. Restore "
            f"{layout.METADATA_NAME} from a backup, or rebuild it from the Parquet files with "
            f"`lakeexportd repair --rebuild {feed_dir.name}`"
        )


def _remove_empty_partitions(storage: Storage, feed_dir: Path, doc: FeedMetadata | None) -> None:
    """Remove day, month and year folders left empty (``remove_dir`` refuses non-empty ones)."""
    listed = {p.path for p in doc.partitions} if isinstance(doc, StreamMetadata) else set()
    for year in _subdirs(storage, feed_dir, _YEAR):
        for month in _subdirs(storage, year, _MONTH):
            for day in _subdirs(storage, month, _DAY):
                if f"{year.name}/{month.name}/{day.name}" not in listed:
                    storage.remove_dir(day)
            storage.remove_dir(month)
        storage.remove_dir(year)


def delete_versions(
    feed_dir: Path, versions: Iterable[Version], *, storage: Storage = LOCAL
) -> list[Path]:
    """Delete table versions a commit already dropped from ``versions`` (oldest first)."""
    removed = []
    try:
        failpoint("prune.before_delete")
        for version in sorted(versions, key=lambda v: v.version):
            path = feed_dir / version.path
            storage.check_inside(feed_dir, path)
            if storage.exists(path):
                names = [n for n in _names(storage, path) if layout.is_snapshot_file_name(n)]
                for i, name in enumerate(names):  # a name lakeexportd does not write stays
                    storage.delete(path / name)
                    if i == 0:
                        failpoint("prune.mid_version")
                storage.remove_dir(path)
            removed.append(path)
            failpoint("prune.after_version")
        storage.sync([feed_dir])
        failpoint("prune.after_all")
    except OSError as exc:
        raise LakeStateError(
            f"cannot delete old versions of {feed_dir}: {exc} (the next run removes them)"
        ) from exc
    return removed


def delete_retired(
    feed_dir: Path, retired: Iterable[Retired], *, storage: Storage = LOCAL
) -> list[Path]:
    """Delete compaction inputs a commit already dropped from ``retired`` (their grace is
    over); one already gone is fine (retention may have taken its partition)."""
    removed = []
    try:
        for entry in retired:
            path = feed_dir / entry.path
            storage.check_inside(feed_dir, path.parent)
            if not layout.is_data_file_name(path.name):
                continue
            hidden = path.parent / layout.retired_name(path.name)  # local lakes hide them
            for candidate in (path, hidden):
                if storage.delete(candidate):
                    removed.append(candidate)
    except OSError as exc:
        raise LakeStateError(
            f"cannot delete retired compaction inputs of {feed_dir}: {exc} (unlisted now: the "
            "next run's cleanup removes them)") from exc
    return removed


def delete_partitions(
    feed_dir: Path, partitions: Iterable[Partition], *, storage: Storage = LOCAL
) -> list[Path]:
    """Delete day partitions a commit already dropped (stream retention)."""
    removed = []
    try:
        failpoint("retention.before_delete")
        for partition in partitions:
            layout.partition_day(partition.path)
            path = feed_dir / partition.path
            storage.check_inside(feed_dir, path)
            if storage.exists(path):
                names = [e.name for e in storage.list_dir(path) if not e.is_dir and (
                    layout.is_data_file_name(e.name) or layout.is_temp_name(e.name))]
                for i, name in enumerate(names):  # a name lakeexportd does not write stays
                    _remove(storage, path / name, feed_dir)
                    if i == 0:
                        failpoint("retention.mid_partition")
                storage.remove_dir(path)
                storage.sync([path.parent])
            removed.append(path)
            failpoint("retention.after_partition")
        for month in {p.parent for p in removed}:
            if storage.remove_dir(month):
                storage.remove_dir(month.parent)
        failpoint("retention.after_parents")
    except OSError as exc:
        raise LakeStateError(
            f"cannot delete expired partitions of {feed_dir}: {exc} (the next run removes them)"
        ) from exc
    return removed
