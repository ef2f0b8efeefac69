"""``MetadataStore``: the only code that reads or writes a feed's ``_metadata.json``.

The file is the commit point of every run (DESIGN.md section 4), replaced atomically through
the storage seam (``Storage.publish``); ``metadata_codec`` turns it into bytes and back. A file
that cannot be read is never overwritten: ``commit`` refuses unless this store loaded the
current file.

A commit whose answer is lost (a timeout, a cut connection, a store error after the write
landed, or a retried PUT refused by its own first attempt) is settled by reading the document
back (DESIGN.md section 11): our exact bytes there mean it landed. The bytes carry the run's id
and times, so no other commit looks the same.
"""

from __future__ import annotations

import threading
from pathlib import Path

import structlog

from lakeexportd.errors import (
    CommitOutcomeUnknown,
    LakeStateError,
    StoreUnreachable,
    store_error,
)
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

log = structlog.get_logger(__name__)

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
        except StoreUnreachable as exc:
            with self._guard:
                self._seen.pop(path, None)
            raise store_error(f"feed {feed_dir.name!r}: cannot read {self.storage.show(path)}",
                              exc) from exc
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
        """Atomically replace the feed's document with ``doc`` (load() it first).

        Raises ``LakeStateError`` when nothing was published (another writer changed the
        document, or the store refused), ``CommitOutcomeUnknown`` when the outcome cannot be
        told (the read-back failed too): the next run's ``load`` sees whichever document is
        there.
        """
        path = layout.metadata_path(feed_dir)
        where = self.storage.show(path)
        changed = LakeStateError(
            f"feed {feed_dir.name!r}: {where} changed since it was loaded, or was never loaded "
            "by this process; refusing to overwrite it: another writer changed the feed, and "
            "nothing of this run was published (is another lakeexportd writing this feed?)"
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
        data = encode(doc)
        try:
            signature = self.storage.publish(path, data, file_mode=file_mode,
                                             failpoint_prefix="metadata", expected=expected)
        except OSError as exc:  # PreconditionFailed included: a retry refused by our own PUT
            with self._guard:
                self._seen.pop(path, None)  # settled below, or load() again
            if self.storage.atomic_rename:  # a local rename: no answer to lose
                if isinstance(exc, PreconditionFailed):
                    raise changed from exc
                raise LakeStateError(f"could not commit {where}: {exc}") from exc
            signature = self._settle(feed_dir, doc, data, expected, exc, changed, file_mode)
        with self._guard:
            self._seen[path] = signature

    def _settle(self, feed_dir: Path, doc: FeedMetadata, data: bytes,
                expected: Signature | None, failure: OSError, changed: LakeStateError,
                file_mode: int) -> Signature:
        """The outcome of a commit that failed or lost its answer, read back from the store.

        Our bytes there: it landed. Another document: another writer won. The document we
        loaded, unchanged: not landed, but the lost PUT could still land late, after this run
        removed its files; publishing the same bytes once more under the same condition
        decides it (whichever of the two lands, the other is refused).
        """
        path = layout.metadata_path(feed_dir)
        where = self.storage.show(path)
        for attempt in (1, 2, 3):
            try:
                found = self._read_back(path)
            except OSError as exc:
                raise CommitOutcomeUnknown(
                    f"feed {feed_dir.name!r}: the commit of {where} failed ({failure}) and "
                    f"reading it back failed too ({exc}), so whether it landed is unknown. "
                    "Nothing is lost: the next run reads whichever document is there and "
                    "goes on from it (check the store's reachability)"
                ) from failure
            if found is not None and found[1] == data:
                log.warning(
                    "metadata.commit_settled", feed=feed_dir.name, location=where,
                    run_id=doc.exports[-1].run_id if doc.exports else None,
                    error=str(failure), hint="the commit landed; its answer was lost",
                )
                return found[0]
            if (None if found is None else found[0]) != expected or attempt == 3:
                raise changed from failure
            if isinstance(failure, PreconditionFailed) and attempt == 1:
                # refused, yet the document is the one we loaded: the store said "changed" for
                # a name it now shows unchanged; publish nothing on such a store
                raise LakeStateError(
                    f"feed {feed_dir.name!r}: the store refused the commit of {where} as "
                    f"changed ({failure}), yet it reads back unchanged; nothing of this run "
                    "was published. Check the store with `lakeexportd check-store`"
                ) from failure
            try:
                signature = self.storage.publish(path, data, file_mode=file_mode,
                                                 expected=expected)
            except PreconditionFailed as exc:
                failure = exc  # our first PUT landed meanwhile, or another writer's: look
                continue
            except OSError as exc:
                raise CommitOutcomeUnknown(
                    f"feed {feed_dir.name!r}: could not commit {where} ({failure}; again: "
                    f"{exc}); a lost request may still land, so this run's files stay for the "
                    "next run, which reads the document back and keeps what it lists (check "
                    "the store's reachability)"
                ) from exc
            log.warning(
                "metadata.commit_settled", feed=feed_dir.name, location=where,
                run_id=doc.exports[-1].run_id if doc.exports else None,
                error=str(failure), hint="the commit did not land; published again",
            )
            return signature
        raise AssertionError("unreachable")

    def _read_back(self, path: Path) -> tuple[Signature, bytes] | None:
        """The document's signature and bytes (``None``: there is none), read consistently."""
        for _ in range(3):
            before = self.storage.signature(path)
            if before is None:
                return None
            try:
                data = self.storage.read_bytes(path)
            except FileNotFoundError:
                continue
            if self.storage.signature(path) == before:
                return before, data
        raise OSError(f"{self.storage.show(path)} kept changing while it was read back")
