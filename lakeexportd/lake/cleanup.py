"""Deleting from the lake: orphans of interrupted runs, pruned table versions, expired days.

Everything here runs under the feed lock and only after (or instead of) a metadata commit:
``_metadata.json`` decides what is data, so a crash between the commit and the deletes only
leaves unlisted files for the next ``remove_orphans``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from lakeexportd.errors import LakeStateError
from lakeexportd.failpoints import failpoint
from lakeexportd.lake import layout
from lakeexportd.lake.metadata_model import FeedMetadata, Partition, StreamMetadata, Version
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


def _stream_orphans(
    storage: Storage, feed_dir: Path, doc: StreamMetadata | None
) -> tuple[list[Path], list[Path]]:
    listed = {f"{p.path}/{f.name}" for p in doc.partitions for f in p.files} if doc else set()
    temps, data = [], []
    for year in _subdirs(storage, feed_dir, _YEAR):
        for month in _subdirs(storage, year, _MONTH):
            for day in _subdirs(storage, month, _DAY):
                partition = f"{year.name}/{month.name}/{day.name}"
                for entry in storage.list_dir(day):
                    if entry.is_dir:
                        continue  # not a name lakeexportd writes: never touched
                    if layout.is_temp_name(entry.name):
                        temps.append(day / entry.name)
                    elif (layout.is_data_file_name(entry.name)
                          and f"{partition}/{entry.name}" not in listed):
                        data.append(day / entry.name)
    return temps, data


def _table_orphans(
    storage: Storage, feed_dir: Path, doc: FeedMetadata | None
) -> tuple[list[Path], list[Path], list[Path]]:
    listed = {v.path: {f.name for f in v.files} for v in getattr(doc, "versions", ())}
    temps, data, versions = [], [], []
    for entry in storage.list_dir(feed_dir):
        if not entry.is_dir or layout.version_number(entry.name) is None:
            continue
        path = feed_dir / entry.name
        if entry.name not in listed:
            versions.append(path)
            continue
        for name in _names(storage, path):
            if layout.is_temp_name(name):
                temps.append(path / name)
            elif layout.is_snapshot_file_name(name) and name not in listed[entry.name]:
                data.append(path / name)
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
    """Remove (or with ``dry_run`` only list) every data file and dir ``doc`` does not list.

    Never touches ``_metadata.json``, ``.lock``, names it does not recognise, or anything
    outside ``feed_dir`` and ``staging_dir``.
    """
    if doc is not None and doc.kind != kind:
        raise LakeStateError(f"{feed_dir}: metadata says kind {doc.kind!r}, expected {kind!r}")
    try:
        temps: list[Path] = []
        data: list[Path] = []
        versions: list[Path] = []
        if kind == "stream":
            stream_doc = doc if isinstance(doc, StreamMetadata) else None
            temps, data = _stream_orphans(storage, feed_dir, stream_doc)
        else:
            temps, data, versions = _table_orphans(storage, feed_dir, doc)
        meta_tmp = feed_dir / layout.temp_name(layout.METADATA_NAME)
        if storage.exists(meta_tmp):
            temps.insert(0, meta_tmp)
        staging = []
        if staging_dir is not None and storage.exists(staging_dir):
            # Empty after a good publish: nothing to report (and removed unless dry_run).
            if storage.list_dir(staging_dir):
                staging = [staging_dir]
            elif not dry_run:
                storage.remove_dir(staging_dir)
        if doc is None and (data or versions):
            raise MetadataMissingError(feed_dir, len(data) + len(versions))
        found = temps + data + versions + staging
        if dry_run or not found:
            return found
        failpoint("cleanup.before")
        for path in temps:
            _remove(storage, path, feed_dir)
            failpoint("cleanup.after_temp")
        for path in data:
            _remove(storage, path, feed_dir)
            failpoint("cleanup.after_data_file")
        for path in versions:
            _remove(storage, path, feed_dir, tree=True)
            failpoint("cleanup.after_version_dir")
        if staging_dir is not None and staging:
            _remove(storage, staging_dir, staging_dir.parent, tree=True)
            failpoint("cleanup.after_staging")
        if kind == "stream" and storage.exists(feed_dir):
            _remove_empty_partitions(storage, feed_dir, doc)
            failpoint("cleanup.after_empty_dirs")
        return found
    except OSError as exc:
        raise LakeStateError(f"cannot clean up {feed_dir}: {exc}") from exc


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
                for i, name in enumerate(_names(storage, path)):
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
                for i, entry in enumerate(storage.list_dir(path)):
                    _remove(storage, path / entry.name, feed_dir, tree=entry.is_dir)
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
