"""``MetadataStore``: the only code that reads or writes a feed's ``_metadata.json``.

The file is the commit point of every run (DESIGN.md section 4), replaced atomically through
the storage seam (``Storage.publish``); ``metadata_codec`` turns it into bytes and back. A file
that cannot be read is never overwritten: ``commit`` refuses unless this store loaded the
current file.
"""

from __future__ import annotations

import threading
from pathlib import Path

from lakeexportd.errors import LakeStateError
from lakeexportd.lake import layout
from lakeexportd.lake.metadata_codec import check_table, decode, encode, from_json, to_json
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
from lakeexportd.lake.storage import LOCAL, PreconditionFailed, Signature, Storage

__all__ = [
    "FORMAT_VERSION", "KEEP_EXPORTS", "ExportRecord", "FeedMetadata", "FileEntry",
    "MetadataStore", "Partition", "SchemaChange", "SchemaColumn", "StreamMetadata",
    "TableMetadata", "Version", "Window", "WrittenFile", "after_stream_run", "after_table_run",
    "check_table", "columns_of", "from_json", "iso_utc", "new_document", "next_version",
    "size_mb", "to_json", "with_export", "with_schema", "with_stream_files",
    "with_table_version", "without_partitions_before",
]

class MetadataStore:
    """Loads and commits ``_metadata.json``; remembers what it loaded, to guard commits."""

    def __init__(self, storage: Storage = LOCAL) -> None:
        self.storage = storage
        self._seen: dict[Path, Signature | None] = {}
        self._guard = threading.Lock()

    def load(self, feed_dir: Path) -> FeedMetadata | None:
        """The feed's document, ``None`` if it has none yet; unreadable is ``LakeStateError``."""
        path = layout.metadata_path(feed_dir)
        try:
            signature = self.storage.signature(path)
            doc = None if signature is None else decode(self.storage.read_bytes(path))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            with self._guard:
                self._seen.pop(path, None)
            where = self.storage.show(path)
            raise LakeStateError(
                f"{where} cannot be used ({exc}); lakeexportd will not overwrite it, and the "
                "feed stays stopped. Restore it from a backup, or move it aside "
                f"(mv {where} {where}.broken) and rebuild it from the feed's Parquet files with "
                f"`lakeexportd repair --rebuild {feed_dir.name}`"
            ) from exc
        with self._guard:
            self._seen[path] = signature
        return doc

    def commit(self, feed_dir: Path, doc: FeedMetadata, *, file_mode: int = 0o640) -> None:
        """Atomically replace the feed's document with ``doc`` (load() it first)."""
        path = layout.metadata_path(feed_dir)
        where = self.storage.show(path)
        changed = LakeStateError(
            f"{where} changed since it was loaded, or was never loaded by this process; "
            "refusing to overwrite it (is another lakeexportd writing this feed?)"
        )
        with self._guard:
            if path not in self._seen:
                raise changed
            expected = self._seen[path]
        if isinstance(doc, TableMetadata):
            try:
                check_table(doc)
            except ValueError as exc:
                raise LakeStateError(f"refusing to commit {where}: {exc}") from exc
        try:
            signature = self.storage.publish(path, encode(doc), file_mode=file_mode,
                                             failpoint_prefix="metadata", expected=expected)
        except PreconditionFailed as exc:
            raise changed from exc
        except OSError as exc:
            raise LakeStateError(f"could not commit {where}: {exc}") from exc
        with self._guard:
            self._seen[path] = signature
