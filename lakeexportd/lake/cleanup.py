"""Deleting from the lake: orphans of interrupted runs, pruned table versions, expired days.

Everything here runs under the feed lock and only after (or instead of) a metadata commit:
``_metadata.json`` decides what is data, so a crash between the commit and the deletes only
leaves unlisted files for the next ``remove_orphans``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from lakeexportd.errors import LakeStateError
from lakeexportd.failpoints import failpoint
from lakeexportd.lake import layout
from lakeexportd.lake.durable import fsync_path
from lakeexportd.lake.metadata_model import FeedMetadata, Partition, StreamMetadata, Version

_YEAR = re.compile(r"year=\d{4}")
_MONTH = re.compile(r"month=\d{2}")
_DAY = re.compile(r"day=\d{2}")


def _subdirs(directory: Path, pattern: re.Pattern[str]) -> list[Path]:
    return sorted(
        Path(e.path) for e in os.scandir(directory)
        if e.is_dir(follow_symlinks=False) and pattern.fullmatch(e.name)
    )


def _remove(path: Path, base: Path) -> None:
    """Remove one file, symlink or directory tree, refusing anything outside ``base``."""
    layout.ensure_inside(base, path.parent)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _stream_orphans(feed_dir: Path, doc: StreamMetadata | None) -> tuple[list[Path], list[Path]]:
    listed = {f"{p.path}/{f.name}" for p in doc.partitions for f in p.files} if doc else set()
    temps, data = [], []
    for year in _subdirs(feed_dir, _YEAR):
        for month in _subdirs(year, _MONTH):
            for day in _subdirs(month, _DAY):
                partition = f"{year.name}/{month.name}/{day.name}"
                for entry in sorted(os.listdir(day)):
                    if layout.is_temp_name(entry):
                        temps.append(day / entry)
                    elif layout.is_data_file_name(entry) and f"{partition}/{entry}" not in listed:
                        data.append(day / entry)
    return temps, data


def _table_orphans(
    feed_dir: Path, doc: FeedMetadata | None
) -> tuple[list[Path], list[Path], list[Path]]:
    listed = {v.path: {f.name for f in v.files} for v in getattr(doc, "versions", ())}
    temps, data, versions = [], [], []
    for entry in sorted(os.listdir(feed_dir)):
        if layout.version_number(entry) is None:
            continue
        path = feed_dir / entry
        if entry not in listed:
            versions.append(path)
            continue
        for name in sorted(os.listdir(path)):
            if layout.is_temp_name(name):
                temps.append(path / name)
            elif layout.is_snapshot_file_name(name) and name not in listed[entry]:
                data.append(path / name)
    return temps, data, versions


def remove_orphans(
    feed_dir: Path,
    doc: FeedMetadata | None,
    *,
    kind: layout.Kind,
    staging_dir: Path | None = None,
    dry_run: bool = False,
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
        if feed_dir.exists() and kind == "stream":
            stream_doc = doc if isinstance(doc, StreamMetadata) else None
            temps, data = _stream_orphans(feed_dir, stream_doc)
        elif feed_dir.exists():
            temps, data, versions = _table_orphans(feed_dir, doc)
        meta_tmp = feed_dir / layout.temp_name(layout.METADATA_NAME)
        if meta_tmp.exists():
            temps.insert(0, meta_tmp)
        if staging_dir is not None and staging_dir.is_dir() and not any(staging_dir.iterdir()):
            staging_dir.rmdir()  # what a successful publish leaves: nothing to report
        staging = [staging_dir] if staging_dir is not None and staging_dir.exists() else []
        if doc is None and (data or versions):
            raise MetadataMissingError(feed_dir, len(data) + len(versions))
        found = temps + data + versions + staging
        if dry_run or not found:
            return found
        failpoint("cleanup.before")
        for path in temps:
            _remove(path, feed_dir)
            failpoint("cleanup.after_temp")
        for path in data:
            _remove(path, feed_dir)
            failpoint("cleanup.after_data_file")
        for path in versions:
            _remove(path, feed_dir)
            failpoint("cleanup.after_version_dir")
        if staging_dir is not None and staging:
            _remove(staging_dir, staging_dir.parent)
            failpoint("cleanup.after_staging")
        if kind == "stream" and feed_dir.exists():
            _remove_empty_partitions(feed_dir, doc)
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


def _remove_empty_partitions(feed_dir: Path, doc: FeedMetadata | None) -> None:
    listed = {p.path for p in doc.partitions} if isinstance(doc, StreamMetadata) else set()
    for year in _subdirs(feed_dir, _YEAR):
        for month in _subdirs(year, _MONTH):
            for day in _subdirs(month, _DAY):
                if f"{year.name}/{month.name}/{day.name}" not in listed and not any(day.iterdir()):
                    day.rmdir()
            if not any(month.iterdir()):
                month.rmdir()
        if not any(year.iterdir()):
            year.rmdir()


def delete_versions(feed_dir: Path, versions: Iterable[Version]) -> list[Path]:
    """Delete table versions a commit already dropped from ``versions`` (oldest first)."""
    removed = []
    try:
        failpoint("prune.before_delete")
        for version in sorted(versions, key=lambda v: v.version):
            path = feed_dir / version.path
            layout.ensure_inside(feed_dir, path)
            if path.exists():
                for i, name in enumerate(sorted(os.listdir(path))):
                    (path / name).unlink()
                    if i == 0:
                        failpoint("prune.mid_version")
                path.rmdir()
            removed.append(path)
            failpoint("prune.after_version")
        fsync_path(feed_dir, directory=True)
        failpoint("prune.after_all")
    except OSError as exc:
        raise LakeStateError(
            f"cannot delete old versions of {feed_dir}: {exc} (the next run removes them)"
        ) from exc
    return removed


def delete_partitions(feed_dir: Path, partitions: Iterable[Partition]) -> list[Path]:
    """Delete day partitions a commit already dropped (stream retention)."""
    removed = []
    try:
        failpoint("retention.before_delete")
        for partition in partitions:
            layout.partition_day(partition.path)
            path = feed_dir / partition.path
            layout.ensure_inside(feed_dir, path)
            if path.exists():
                for i, name in enumerate(sorted(os.listdir(path))):
                    _remove(path / name, feed_dir)
                    if i == 0:
                        failpoint("retention.mid_partition")
                path.rmdir()
                fsync_path(path.parent, directory=True)
            removed.append(path)
            failpoint("retention.after_partition")
        for month in {p.parent for p in removed}:
            if month.exists() and not any(month.iterdir()):
                month.rmdir()
                if not any(month.parent.iterdir()):
                    month.parent.rmdir()
        failpoint("retention.after_parents")
    except OSError as exc:
        raise LakeStateError(
            f"cannot delete expired partitions of {feed_dir}: {exc} (the next run removes them)"
        ) from exc
    return removed
