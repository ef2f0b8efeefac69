"""``MetadataStore``: the only code that reads or writes a feed's ``_metadata.json``.

The file is the commit point of every run (DESIGN.md section 4): written to a temp file in the
same directory, fsynced, renamed over the old one, and the directory fsynced. A file that cannot
be read is never overwritten: ``commit`` refuses unless this store loaded the current file.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from lakeexportd.errors import LakeStateError
from lakeexportd.failpoints import failpoint
from lakeexportd.lake import layout
from lakeexportd.lake.durable import fsync_path
from lakeexportd.lake.metadata_model import (
    FORMAT_VERSION,
    KEEP_EXPORTS,
    ExportRecord,
    FeedMetadata,
    FileEntry,
    Partition,
    SchemaChange,
    SchemaColumn,
    StreamMetadata,
    TableMetadata,
    Version,
    Window,
    WrittenFile,
    iso_utc,
    size_mb,
    to_json,
)
from lakeexportd.lake.metadata_update import (
    after_stream_run,
    after_table_run,
    columns_of,
    new_document,
    next_version,
    with_export,
    with_schema,
    with_stream_files,
    with_table_version,
    without_partitions_before,
)

__all__ = [
    "FORMAT_VERSION", "KEEP_EXPORTS", "ExportRecord", "FeedMetadata", "FileEntry",
    "MetadataStore", "Partition", "SchemaChange", "SchemaColumn", "StreamMetadata",
    "TableMetadata", "Version", "Window", "WrittenFile", "after_stream_run", "after_table_run",
    "check_table", "columns_of", "from_json", "iso_utc", "new_document", "next_version",
    "size_mb", "to_json", "with_export", "with_schema", "with_stream_files",
    "with_table_version", "without_partitions_before",
]

_KNOWN = {
    "format_version", "source", "feed", "kind", "mode", "last_export", "last_status",
    "total_records", "total_size_bytes", "total_size_mb", "schema", "schema_history",
    "watermark", "partitions", "current_version", "last_version", "versions", "exports",
}
_SCHEMA_KEYS = ("name", "ksql_type", "arrow_type")
_Signature = tuple[int, int, int] | None


class _Shape(ValueError):
    """The JSON parsed but is not a metadata document; the message says where."""


def _get(
    obj: Any, key: str, kind: type | tuple[type, ...], where: str, *, null: bool = False
) -> Any:
    if not isinstance(obj, dict):
        raise _Shape(f"{where} is not an object")
    if key not in obj:
        raise _Shape(f"{where}.{key} is missing")
    value = obj[key]
    if value is None and null:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _Shape(f"{where}.{key} has the wrong type ({type(value).__name__})")
    return value


def _opt(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    return _get(obj, key, kind, where, null=True) if key in obj else None


def _files(raw: Any, where: str, check: Any) -> tuple[FileEntry, ...]:
    out = []
    for i, f in enumerate(_get(raw, "files", list, where)):
        w = f"{where}.files[{i}]"
        name = _get(f, "name", str, w)
        if not check(name):
            raise _Shape(f"{w}.name {name!r} is not a data file name")
        out.append(FileEntry(
            name, _get(f, "records", int, w), _get(f, "size_bytes", int, w),
            _opt(f, "min_event_ms", int, w), _opt(f, "max_event_ms", int, w),
        ))
    if len({f.name for f in out}) != len(out):
        raise _Shape(f"{where}.files lists a name twice")
    return tuple(out)


def _exports(raw: list[Any]) -> tuple[ExportRecord, ...]:
    out = []
    for i, e in enumerate(raw):
        w = f"$.exports[{i}]"
        window = None
        if "window" in e and e["window"] is not None:
            window = Window(_get(e["window"], "from_ms", int, w + ".window", null=True),
                            _get(e["window"], "to_ms", int, w + ".window"))
        out.append(ExportRecord(
            _get(e, "run_id", str, w), _get(e, "started", str, w), _get(e, "finished", str, w),
            _get(e, "records", int, w), _get(e, "status", str, w), window,
            _opt(e, "error", str, w), _opt(e, "files", int, w), _opt(e, "size_bytes", int, w),
            _opt(e, "version", int, w),
        ))
    return tuple(out)


def from_json(raw: Any) -> FeedMetadata:
    """Decode and check a parsed document; any deviation is a ``ValueError`` saying where."""
    if _get(raw, "format_version", int, "$") != FORMAT_VERSION:
        raise _Shape(f"$.format_version is {raw['format_version']}, expected {FORMAT_VERSION}")
    kind = _get(raw, "kind", str, "$")
    schema = tuple(
        SchemaColumn(*(_get(c, k, str, f"$.schema[{i}]") for k in _SCHEMA_KEYS))
        for i, c in enumerate(_get(raw, "schema", list, "$"))
    )
    history = tuple(
        SchemaChange(_get(c, "changed", str, f"$.schema_history[{i}]"),
                     *(tuple(c.get(k, ())) for k in ("added", "removed", "retyped")))
        for i, c in enumerate(raw.get("schema_history", []))
    )
    common: dict[str, Any] = {
        "feed": _get(raw, "feed", str, "$"), "source": _get(raw, "source", str, "$"),
        "last_export": _get(raw, "last_export", str, "$", null=True),
        "last_status": _get(raw, "last_status", str, "$", null=True),
        "schema": schema, "schema_history": history,
        "exports": _exports(_get(raw, "exports", list, "$")),
        "extra": {k: v for k, v in raw.items() if k not in _KNOWN},
    }
    if kind == "stream":
        partitions = []
        for i, p in enumerate(_get(raw, "partitions", list, "$")):
            path = _get(p, "path", str, f"$.partitions[{i}]")
            layout.partition_day(path)
            files = _files(p, f"$.partitions[{i}]", layout.is_data_file_name)
            partitions.append(Partition(path, files))
        if len({p.path for p in partitions}) != len(partitions):
            raise _Shape("$.partitions lists a path twice")
        mark = _get(raw, "watermark", dict, "$")
        watermark = _get(mark, "rowtime_ms", int, "$.watermark", null=True)
        return StreamMetadata(**common, partitions=tuple(partitions), watermark_ms=watermark)
    if kind == "table":
        versions = tuple(
            Version(
                _get(v, "version", int, f"$.versions[{i}]"),
                _get(v, "created", str, f"$.versions[{i}]"),
                _files(v, f"$.versions[{i}]", layout.is_snapshot_file_name),
            )
            for i, v in enumerate(_get(raw, "versions", list, "$"))
        )
        doc = TableMetadata(
            **common, versions=versions,
            current_version=_get(raw, "current_version", int, "$", null=True),
            last_version=_get(raw, "last_version", int, "$"),
        )
        check_table(doc)
        return doc
    raise _Shape(f"$.kind is {kind!r}, expected 'stream' or 'table'")


def check_table(doc: TableMetadata) -> None:
    numbers = [v.version for v in doc.versions]
    if len(set(numbers)) != len(numbers) or any(n < 1 for n in numbers):
        raise _Shape("$.versions has duplicate or non-positive version numbers")
    if numbers and doc.last_version < max(numbers):
        raise _Shape(f"$.last_version {doc.last_version} is below a listed version")
    if doc.current_version is not None and doc.current_version not in numbers:
        raise _Shape(f"$.current_version {doc.current_version} is not in $.versions")



def _signature(path: Path) -> _Signature:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class MetadataStore:
    """Loads and commits ``_metadata.json``; remembers what it loaded, to guard commits."""

    def __init__(self) -> None:
        self._seen: dict[Path, _Signature] = {}
        self._guard = threading.Lock()

    def load(self, feed_dir: Path) -> FeedMetadata | None:
        """The feed's document, ``None`` if it has none yet; unreadable is ``LakeStateError``."""
        path = layout.metadata_path(feed_dir)
        try:
            signature = _signature(path)
            if signature is None:
                doc = None
            else:
                doc = from_json(json.loads(path.read_bytes()))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            with self._guard:
                self._seen.pop(path, None)
            raise LakeStateError(
                f"{path} cannot be used ({exc}); lakeexportd will not overwrite it, and the "
                "feed stays stopped. Restore it from a backup, or move it aside "
                f"(mv {path} {path}.broken) and rebuild it from the feed's Parquet files with "
                f"`lakeexportd repair --rebuild {feed_dir.name}`"
            ) from exc
        with self._guard:
            self._seen[path] = signature
        return doc

    def commit(self, feed_dir: Path, doc: FeedMetadata, *, file_mode: int = 0o640) -> None:
        """Atomically replace the feed's document with ``doc`` (load() it first)."""
        path = layout.metadata_path(feed_dir)
        with self._guard:
            if path not in self._seen or self._seen[path] != _signature(path):
                raise LakeStateError(
                    f"{path} changed since it was loaded, or was never loaded by this process; "
                    "refusing to overwrite it (is another lakeexportd writing this feed?)"
                )
        if isinstance(doc, TableMetadata):
            try:
                check_table(doc)
            except ValueError as exc:
                raise LakeStateError(f"refusing to commit {path}: {exc}") from exc
        data = (json.dumps(to_json(doc), indent=2, allow_nan=False) + "\n").encode()
        tmp = feed_dir / layout.temp_name(layout.METADATA_NAME)
        try:
            failpoint("metadata.before_tmp_write")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file_mode)
            try:
                os.fchmod(fd, file_mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                failpoint("metadata.after_tmp_write")
                os.fsync(fd)
            finally:
                os.close(fd)
            failpoint("metadata.after_tmp_fsync")
            os.replace(tmp, path)
            failpoint("metadata.after_replace")
            fsync_path(feed_dir, directory=True)
            failpoint("metadata.after_dir_fsync")
        except OSError as exc:
            raise LakeStateError(f"could not commit {path}: {exc}") from exc
        finally:
            # After a successful replace there is nothing to remove; a stale temp left by an
            # error here is harmless (orphan cleanup removes it).
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        with self._guard:
            self._seen[path] = _signature(path)
