"""Compaction of a plain-Parquet stream (DESIGN.md section 12): a closed day's small files
become a few files near ``target_file_size``, swapped in by one ``_metadata.json`` commit.

A day partition is *closed* when its day ended (in the feed's time zone) more than ``after``
days ago; ``--before DATE`` replaces that cutoff. A day is worth compacting when it lists two
or more files smaller than half the target (bigger ones are left alone). Its small files are
grouped in name order (so rows keep their order) into groups of about the target size; each
group is streamed (``iter_batches``: memory is one row group, never a day) into one new file
``data_<start>_cNNNN.parquet`` with the export's writer settings and the feed's schema from
``_metadata.json`` (the arrow types there; a column an input lacks is null; types are never
inferred, decimals stay exact). Days with files in a colder storage class are skipped.

Per day, under the feed's lock: write the outputs, then one commit lists them instead of the
inputs and records the inputs in ``retired`` (``metadata_update.with_compacted``). The inputs
stay on disk for ``lake.orphan_grace`` after the swap, so a reader that listed them before
finishes; cleanup keeps them (``metadata_model.kept_paths``), and a later commit (the next
export or compaction) drops them from ``retired`` and then deletes them
(``metadata_update.expire_retired``). A crash before the commit leaves unlisted outputs that
orphan cleanup removes; after it, the inputs are retired: nothing is lost or listed twice.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from lakeexportd.config.model import Compaction, Feed
from lakeexportd.errors import CommitOutcomeUnknown, FeedError, LakeStateError
from lakeexportd.failpoints import failpoint
from lakeexportd.lake import cleanup, delta, layout
from lakeexportd.lake.locking import FeedLock, HeldLock
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import (
    FileEntry,
    Partition,
    StreamMetadata,
    WrittenFile,
)
from lakeexportd.lake.metadata_update import expire_retired, with_compacted
from lakeexportd.lake.parquet_writer import ParquetFile
from lakeexportd.lake.storage import Storage

COMPACTED_FROM = "lakeexportd.compacted_from"
"""Footer key of a compacted file: the JSON list of the file names it replaced."""
BATCH_ROWS = 65_536
"""Rows read from an input at a time: a step of the stream, far below a row group."""

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DayPlan:
    """One day partition's small files, grouped: each group becomes one output file."""

    partition: str
    groups: tuple[tuple[FileEntry, ...], ...]

    @property
    def inputs(self) -> tuple[FileEntry, ...]:
        return tuple(f for group in self.groups for f in group)

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.inputs)

    @property
    def records(self) -> int:
        return sum(f.records for f in self.inputs)


@dataclass
class CompactResult:
    """What a run compacted (or, dry, would compact)."""

    feed: str
    dry_run: bool
    days: list[DayPlan] = field(default_factory=list)
    written: list[WrittenFile] = field(default_factory=list)
    tiered: list[str] = field(default_factory=list)  # days skipped: files in a colder class
    expired: int = 0  # retired inputs whose grace was over, deleted by this run
    stopped: bool = False  # the cancel event stopped it between two days

    @property
    def files_in(self) -> int:
        return sum(len(d.inputs) for d in self.days)

    @property
    def files_out(self) -> int:
        return len(self.written) if not self.dry_run else sum(len(d.groups) for d in self.days)

    @property
    def bytes_in(self) -> int:
        return sum(d.size_bytes for d in self.days)

    @property
    def bytes_out(self) -> int:
        return sum(w.size_bytes for w in self.written)


def cutoff_day(now: dt.datetime, after_days: int, timezone: str) -> dt.date:
    """Days before this one ended more than ``after_days`` days ago (in ``timezone``)."""
    return layout.retention_cutoff(now, after_days, timezone)


def _groups(files: Sequence[FileEntry], target: int) -> tuple[tuple[FileEntry, ...], ...]:
    """Consecutive runs of ``files`` of about ``target`` bytes; a lone file is no group."""
    groups: list[tuple[FileEntry, ...]] = []
    current: list[FileEntry] = []
    size = 0
    for f in files:
        current.append(f)
        size += f.size_bytes
        if size >= target:
            groups.append(tuple(current))
            current, size = [], 0
    if current:
        groups.append(tuple(current))
    return tuple(g for g in groups if len(g) >= 2)


def plan_day(partition: Partition, target: int) -> DayPlan | None:
    """The day's plan, ``None`` when it has fewer than two small files."""
    small = sorted((f for f in partition.files if f.size_bytes < target / 2),
                   key=lambda f: f.name)
    groups = _groups(small, target) if len(small) >= 2 else ()
    return DayPlan(partition.path, groups) if groups else None


def plan(doc: StreamMetadata, *, before: dt.date, target: int) -> tuple[list[DayPlan], list[str]]:
    """(the days before ``before`` worth compacting, the days skipped as tiered)."""
    days, tiered = [], []
    for partition in doc.partitions:
        if layout.partition_day(partition.path) >= before:
            continue
        day = plan_day(partition, target)
        if day is None:
            continue
        if any(f.tier is not None for f in partition.files):
            tiered.append(partition.path)  # rewriting would bring it back to the default class
            continue
        days.append(day)
    return days, tiered


def target_schema(doc: StreamMetadata, inputs: Sequence[pa.Schema]) -> pa.Schema:
    """The feed's schema from ``_metadata.json`` (its order and arrow types), for the columns
    the inputs hold; each field (with its ``ksql_type``) comes from an input whose type is the
    one the document names. A column none of the inputs has stays out (their rows have none)."""
    out = []
    for column in doc.schema:
        candidates = [s.field(column.name) for s in inputs if column.name in s.names]
        if not candidates:
            continue
        exact = [f for f in candidates if _same_type(str(f.type), column.arrow_type)]
        if not exact:
            raise LakeStateError(
                f"feed {doc.feed!r}: column {column.name} is {candidates[0].type} in the files "
                f"but {column.arrow_type} in _metadata.json; compaction writes only the "
                "document's types and compacted nothing. Run `lakeexportd verify "
                f"{doc.feed}`")
        out.append(exact[-1])
    return pa.schema(out)


_LIST_ITEM = re.compile(r"list<(?:item|element): ")
_MAP_ENTRIES = re.compile(r" \('[^']*'\)")


def _same_type(file_type: str, documented: str) -> bool:
    """Arrow's text of a type names a list's item field and a map's entries field, which
    differ between the decoder's schema (``item``) and a Parquet file read back (``element``,
    the column's name): the same type for every reader, so those names are not compared."""
    def plain(text: str) -> str:
        return _MAP_ENTRIES.sub("", _LIST_ITEM.sub("list<", text))
    return plain(file_type) == plain(documented)


def _conformed(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` in ``schema``: missing columns null, an older storage type cast exactly."""
    arrays = []
    for f in schema:
        index = batch.schema.get_field_index(f.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, f.type))
            continue
        column = batch.column(index)
        arrays.append(column if column.type == f.type else column.cast(f.type, safe=True))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


Progress = Callable[[str, int, int], None]
"""Called after each output file: (partition, input files done, bytes read)."""


class Compactor:
    """Compacts one stream feed's closed days; see the module doc."""

    def __init__(self, storage: Storage, root: Path, *, lock_wait: float,
                 orphan_grace: float, follow: Callable[[], bool] | None = None) -> None:
        self.storage = storage
        self.root = root
        self.lock_wait = lock_wait
        self.orphan_grace = orphan_grace
        # With a catalog (DESIGN 13): called after each commit, True once the catalog lists
        # what the lake does. Files a commit took out are hidden or deleted only then.
        self.follow = follow

    def _level(self) -> bool:
        return self.follow is None or self.follow()

    def compact(
        self, feed: str, *, target_file_size: int, before: dt.date, now: dt.datetime,
        dir_mode: int = 0o750, file_mode: int = 0o640, dry_run: bool = False,
        progress: Progress | None = None, cancel: threading.Event | None = None,
        held: HeldLock | None = None,
    ) -> CompactResult:
        feed_dir = layout.feed_dir(self.root, "stream", feed)
        self.storage.check_inside(self.root, feed_dir)
        store = MetadataStore(self.storage)
        result = CompactResult(feed, dry_run)
        doc = store.load(feed_dir)
        if doc is None:
            return result
        if not isinstance(doc, StreamMetadata):
            raise FeedError(f"feed {feed!r} is a table: compaction rewrites stream day "
                            "partitions (each table version is written whole)")
        days, result.tiered = plan(doc, before=before, target=target_file_size)
        if dry_run:
            result.days = days
            return result
        lock: FeedLock | HeldLock = held if held is not None else FeedLock(
            feed_dir, feed=feed, wait=self.lock_wait, dir_mode=dir_mode, storage=self.storage)
        with lock:
            if not self.storage.leases and self._level():  # local: the flock excludes others
                # Leftovers of a killed run (an export's or a compaction's) go first, as at
                # an export's start: a glob reader would otherwise count their rows twice.
                cleanup.remove_orphans(feed_dir, store.load(feed_dir), kind="stream",
                                       storage=self.storage)
            self._expire(store, feed_dir, now, file_mode, lock.check, result)
        for day in days:
            if cancel is not None and cancel.is_set():
                result.stopped = True
                break
            with lock:
                current = store.load(feed_dir)
                if not isinstance(current, StreamMetadata):
                    raise LakeStateError(
                        f"feed {feed!r}: {self.storage.show(feed_dir)}/_metadata.json went "
                        "away during compaction; nothing more was compacted. Restore it, or "
                        f"rebuild it with `lakeexportd repair --rebuild {feed}`")
                partition = next((p for p in current.partitions if p.path == day.partition),
                                 None)
                fresh = None if partition is None else plan_day(partition, target_file_size)
                if fresh is None:
                    continue  # retention or another compaction took it meanwhile
                written = self._day(current, fresh, feed_dir, now, dir_mode, file_mode,
                                    progress, lock.check, store)
                result.days.append(fresh)
                result.written += written
        if result.days and self.orphan_grace <= 0:
            with lock:  # no grace asked for: this run's own inputs go now
                self._expire(store, feed_dir, now, file_mode, lock.check, result)
        return result

    def _expire(self, store: MetadataStore, feed_dir: Path, now: dt.datetime, file_mode: int,
                fence: Callable[[], None], result: CompactResult) -> None:
        """Retired inputs past their grace: drop them from the document, then delete them."""
        doc = store.load(feed_dir)
        if not isinstance(doc, StreamMetadata):
            return
        doc, expired = expire_retired(doc, now, self.orphan_grace)
        if expired:
            fence()
            store.commit(feed_dir, doc, file_mode=file_mode)
            if self._level():
                result.expired += len(cleanup.delete_retired(feed_dir, expired,
                                                             storage=self.storage))

    def _day(
        self, doc: StreamMetadata, day: DayPlan, feed_dir: Path, now: dt.datetime,
        dir_mode: int, file_mode: int, progress: Progress | None,
        fence: Callable[[], None], store: MetadataStore,
    ) -> list[WrittenFile]:
        directory = feed_dir / day.partition
        taken = {e.name for e in self.storage.list_dir(directory)}
        numbers = (n for n in range(1, layout.MAX_PART + 1)
                   if layout.compacted_file_name(now, n) not in taken)
        written: list[WrittenFile] = []
        created: list[Path] = []
        try:
            schema = target_schema(doc, [self._schema(directory / f.name)
                                         for f in day.inputs])
            done = read = 0
            for group in day.groups:
                name = layout.compacted_file_name(now, next(numbers))
                written.append(self._write(feed_dir, day.partition, name, group, schema,
                                           file_mode, created))
                done += len(group)
                read += sum(f.size_bytes for f in group)
                if progress is not None:
                    progress(day.partition, done, read)
                failpoint("compact.after_file")
            if self.storage.atomic_rename:
                self.storage.sync([directory])
            failpoint("compact.before_commit")
            fence()
            new = with_compacted(doc, day.partition, [f.name for f in day.inputs], written,
                                 now=now)
            store.commit(feed_dir, new, file_mode=file_mode)
        except CommitOutcomeUnknown:
            raise  # the commit may have landed: the next run judges the outputs by the document
        except BaseException:
            for path in created:  # never listed: ours to remove (orphan cleanup would, too)
                try:
                    self.storage.delete(path)
                except OSError:
                    pass  # unlisted: the next run's cleanup removes it
            raise
        failpoint("compact.after_commit")
        if self._level() and self.storage.atomic_rename:
            self._hide(directory, day.inputs)
        return written

    def _hide(self, directory: Path, inputs: Sequence[FileEntry]) -> None:
        """A local lake renames the swapped-out inputs to ``.<name>.retired`` at once, so a
        reader that globs ``*.parquet`` never sees a compacted day twice; a reader holding
        one open reads it to the end (POSIX), and the grace still applies to deleting them.
        (An object store cannot rename: there readers take the list from the metadata.)"""
        for entry in inputs:
            try:
                self.storage.promote(directory / entry.name,
                                     directory / layout.retired_name(entry.name))
            except OSError as exc:  # still listed as retired: deleted after the grace anyway
                log.warning("compact.input_not_hidden", file=str(directory / entry.name),
                            error=str(exc), hint="globbing readers see this day twice until "
                            "the file is deleted after lake.orphan_grace")

    def _schema(self, path: Path) -> pa.Schema:
        try:
            with self.storage.open_read(path) as source:
                return pq.ParquetFile(source).schema_arrow
        except (OSError, pa.ArrowException) as exc:
            raise LakeStateError(self._unreadable(path, exc)) from exc

    def _unreadable(self, path: Path, exc: BaseException) -> str:
        return (f"{self.storage.show(path)} is listed but cannot be read ({exc}); nothing of "
                f"its day was compacted. Run `lakeexportd verify {path.parents[3].name}`")

    def _batches(self, path: Path, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        try:
            with self.storage.open_read(path) as source:
                for batch in pq.ParquetFile(source).iter_batches(batch_size=BATCH_ROWS):
                    yield _conformed(batch, schema)
        except (OSError, pa.ArrowException) as exc:
            raise LakeStateError(self._unreadable(path, exc)) from exc

    def _write(self, feed_dir: Path, partition: str, name: str, group: Sequence[FileEntry],
               schema: pa.Schema, file_mode: int, created: list[Path]) -> WrittenFile:
        """Stream ``group`` (in order) into ``partition/name``; returns the listed entry."""
        directory = feed_dir / partition
        # The names it replaces ride in the footer: `repair --rebuild` leaves them out.
        schema = schema.with_metadata({COMPACTED_FROM: json.dumps([f.name for f in group])})
        in_place = not self.storage.atomic_rename  # object stores: the upload is all or nothing
        path = directory / (name if in_place else layout.temp_name(name))
        handle = ParquetFile(path, schema, file_mode=file_mode, failpoint_prefix="compact",
                             storage=self.storage)
        created.append(path)
        try:
            for entry in group:
                for batch in self._batches(directory / entry.name, schema):
                    handle.append(batch, None, None)
            size = handle.close()
        except BaseException:
            handle.discard()
            created.remove(path)
            raise
        if not in_place:
            self.storage.promote(path, directory / name)
            created[-1] = directory / name
        lows = [f.min_event_ms for f in group if f.min_event_ms is not None]
        highs = [f.max_event_ms for f in group if f.max_event_ms is not None]
        # Its `added` (commit time) is its newest input's: metadata_update.with_compacted.
        return WrittenFile(partition, name, handle.rows, size, min(lows) if lows else None,
                           max(highs) if highs else None)


def compact_feed(
    storage: Storage, root: Path, feed: Feed, *, now: dt.datetime, lock_wait: float,
    orphan_grace: float, before: dt.date | None = None, dry_run: bool = False,
    progress: Progress | None = None, cancel: threading.Event | None = None,
    follow: Callable[[], bool] | None = None, held: HeldLock | None = None,
) -> CompactResult | delta.DeltaCompaction:
    """Compact ``feed`` as its config says (``before`` replaces the ``after`` cutoff): the
    one entry point of the CLI and the daemon; a feed's format picks the implementation.
    ``follow`` brings the feed's catalog level after each commit (see ``Compactor``);
    ``held``: the feed's lock, already held by the caller (a realtime feed)."""
    if feed.kind != "stream":
        raise FeedError(f"feed {feed.name!r} is a table: compaction applies to streams only")
    if feed.compaction is None and before is None:
        return CompactResult(feed.name, dry_run)
    target = (feed.compaction or Compaction()).target_file_size
    if before is None:
        assert feed.compaction is not None
        before = cutoff_day(now, feed.compaction.after_days, feed.timezone)
    dir_mode, file_mode = layout.modes(feed.security)
    if feed.format == "delta":  # delta-rs's optimize per closed day, then vacuum
        return delta.compact_stream(
            storage, layout.feed_dir(root, "stream", feed.name), feed.name, before=before,
            target_size=target, orphan_grace=orphan_grace, lock_wait=lock_wait,
            dir_mode=dir_mode, file_mode=file_mode, dry_run=dry_run, cancel=cancel,
            progress=progress, held=held)
    compactor = Compactor(storage, root, lock_wait=lock_wait, orphan_grace=orphan_grace,
                          follow=follow)
    return compactor.compact(feed.name, target_file_size=target, before=before, now=now,
                             dir_mode=dir_mode, file_mode=file_mode, dry_run=dry_run,
                             progress=progress, cancel=cancel, held=held)
