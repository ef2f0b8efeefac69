"""Storage tiering (DESIGN.md section 11): old day partitions move to a colder class in place.

A stream feed with ``tiering: {after: 30d, class: STANDARD_IA}`` on an object-store lake has
each *closed* day partition (its day is before the watermark's day, so no export appends to it
unless an ``event_time`` row arrives late) older than ``after`` days (by its day in the feed's
time zone) moved to the class. "Moved" is ``Storage.rewrite_in_class``: the same key and bytes,
so paths never change and readers keep working.

``_metadata.json`` records the class of each listed file (``tier``; absent: the store's
default) and, computed from them, of each partition. A file that lands in a moved partition
later (a late ``event_time`` row, a backfill) is listed without a tier, so the partition reads
``mixed`` and the next run moves just that file: nothing is ever left in a class the document
does not say, except for the one kind of crash below.

The work is done in batches (at most ``BATCH_FILES`` files or ``BATCH_BYTES`` bytes of one
partition), each under the feed's lock and committed on its own: an export of the same feed
waits at most one batch, and never runs at the same time. A batch rewrites its files, then
commits the document (conditional, fenced by the lock's ``check``) with their new class. A
crash between the two leaves objects in the new class that the document still lists in the
old one: the next run rewrites them again (same bytes, same class), which is idempotent. No
object is created or deleted, and a file is only rewritten when its size is the listed one.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lakeexportd.errors import ConfigError, FeedError, LakeStateError, StoreUnavailable
from lakeexportd.failpoints import failpoint
from lakeexportd.lake import layout
from lakeexportd.lake.locking import FeedLock
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import FileEntry, StreamMetadata
from lakeexportd.lake.metadata_update import with_file_tiers
from lakeexportd.lake.storage import PreconditionFailed, Storage

BATCH_FILES = 50
BATCH_BYTES = 256 * 1024 * 1024
"""A batch holds the feed lock while it rewrites: small enough that an export waiting for the
lock (scheduler.lock_wait, 10s by default) usually gets it."""
DEFAULT_TIER = "default"
"""How the store's default class (S3 STANDARD, Azure Hot or the account's) is shown."""


def shown_tier(tier: str | None) -> str:
    return DEFAULT_TIER if tier is None else tier


def shown_bytes_per_tier(per_tier: Mapping[str | None, int]) -> dict[str, int]:
    """Bytes per class as shown (``default`` for the store's own), the default first."""
    ordered = sorted(per_tier.items(), key=lambda item: (item[0] is not None, item[0] or ""))
    return {shown_tier(tier): size for tier, size in ordered}


@dataclass(frozen=True)
class Move:
    """One partition's files that are not in the target class yet."""

    partition: str
    files: tuple[FileEntry, ...]

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @property
    def from_tiers(self) -> str:
        return "+".join(sorted({shown_tier(f.tier) for f in self.files}))


@dataclass
class TierResult:
    """What a run moved (or, dry, would move), and the feed's bytes per class after it."""

    feed: str
    storage_class: str
    dry_run: bool
    moves: list[Move] = field(default_factory=list)
    bytes_per_tier: dict[str | None, int] = field(default_factory=dict)
    stopped: bool = False  # the cancel event stopped it between two files

    @property
    def files(self) -> int:
        return sum(len(m.files) for m in self.moves)

    @property
    def size_bytes(self) -> int:
        return sum(m.size_bytes for m in self.moves)


def cutoff_day(now: dt.datetime, after_days: int, timezone: str) -> dt.date:
    """Partitions of days before this one are old enough to move."""
    return layout.retention_cutoff(now, after_days, timezone)


def due(doc: StreamMetadata, storage_class: str, *, now: dt.datetime, after_days: int,
        timezone: str) -> list[Move]:
    """The closed partitions older than ``after_days`` with files not in ``storage_class``."""
    if doc.watermark_ms is None:
        return []
    before = min(cutoff_day(now, after_days, timezone),
                 layout.event_day(doc.watermark_ms, timezone))
    moves = []
    for partition in doc.partitions:
        if layout.partition_day(partition.path) >= before:
            continue
        pending = tuple(f for f in partition.files if f.tier != storage_class)
        if pending:
            moves.append(Move(partition.path, pending))
    return moves


Progress = Callable[[str, FileEntry], None]
"""Called after each file is rewritten: (partition, file)."""


class Tierer:
    """Moves one stream feed's old partitions to a colder class; see the module doc."""

    def __init__(self, storage: Storage, root: Path, *, lock_wait: float,
                 batch_files: int = BATCH_FILES, batch_bytes: int = BATCH_BYTES) -> None:
        self.storage = storage
        self.root = root
        self.lock_wait = lock_wait
        self.batch_files = batch_files
        self.batch_bytes = batch_bytes

    def tier(
        self, feed: str, storage_class: str, *, after_days: int, timezone: str,
        now: dt.datetime, dir_mode: int = 0o750, file_mode: int = 0o640, dry_run: bool = False,
        progress: Progress | None = None, cancel: threading.Event | None = None,
    ) -> TierResult:
        feed_dir = layout.feed_dir(self.root, "stream", feed)
        self.storage.check_inside(self.root, feed_dir)
        if storage_class not in self.storage.storage_classes:
            allowed = " | ".join(sorted(self.storage.storage_classes))
            raise ConfigError(
                f"feed {feed!r}: tiering to {storage_class!r} is not possible on the lake at "
                f"{self.storage.show(self.root)} ("
                + (f"its classes are {allowed}" if allowed else "it has no storage classes")
                + "): fix or remove the feed's `tiering:`")
        store = MetadataStore(self.storage)
        result = TierResult(feed, storage_class, dry_run)
        doc = store.load(feed_dir)
        if doc is None:
            return result
        if not isinstance(doc, StreamMetadata):
            raise FeedError(f"feed {feed!r} is a table: tiering moves stream day partitions")
        plan = due(doc, storage_class, now=now, after_days=after_days, timezone=timezone)
        if dry_run:
            result.moves = plan
            result.bytes_per_tier = _after(doc, plan, storage_class)
            return result
        lock = FeedLock(feed_dir, feed=feed, wait=self.lock_wait, dir_mode=dir_mode,
                        storage=self.storage)
        for move in plan:
            while not result.stopped:
                with lock:
                    doc = store.load(feed_dir)
                    if not isinstance(doc, StreamMetadata):
                        raise LakeStateError(
                            f"feed {feed!r}: {self.storage.show(feed_dir)}/_metadata.json "
                            "went away during tiering; nothing more was moved. Restore it, "
                            f"or rebuild it with `lakeexportd repair --rebuild {feed}`")
                    done, more = self._batch(doc, move.partition, storage_class, feed_dir,
                                             progress, cancel)
                    if done:
                        failpoint("tier.before_commit")
                        lock.check()
                        doc = with_file_tiers(doc, move.partition, [f.name for f in done],
                                              storage_class)
                        store.commit(feed_dir, doc, file_mode=file_mode)
                        failpoint("tier.after_commit")
                        result.moves.append(Move(move.partition, done))
                    result.bytes_per_tier = doc.bytes_per_tier()
                result.stopped = cancel is not None and cancel.is_set()
                if not more:
                    break
        if not plan:
            result.bytes_per_tier = doc.bytes_per_tier()
        return result

    def _batch(
        self, doc: StreamMetadata, path: str, storage_class: str, feed_dir: Path,
        progress: Progress | None, cancel: threading.Event | None,
    ) -> tuple[tuple[FileEntry, ...], bool]:
        """Rewrite the next batch of ``path``'s files; (the rewritten ones, whether more are
        left). The partition may be gone (retention) or done (another run) by now."""
        partition = next((p for p in doc.partitions if p.path == path), None)
        pending = [] if partition is None else \
            [f for f in partition.files if f.tier != storage_class]
        done: list[FileEntry] = []
        size = 0
        for entry in pending:
            if len(done) >= self.batch_files or (done and size >= self.batch_bytes):
                break
            if cancel is not None and cancel.is_set():
                break
            self._rewrite(doc.feed, feed_dir, path, entry, storage_class)
            done.append(entry)
            size += entry.size_bytes
            if progress is not None:
                progress(path, entry)
            failpoint("tier.after_object")
        return tuple(done), len(done) < len(pending)

    def _rewrite(self, feed: str, feed_dir: Path, partition: str, entry: FileEntry,
                 storage_class: str) -> None:
        location = feed_dir / partition / entry.name
        where = self.storage.show(location)
        try:
            self.storage.rewrite_in_class(location, storage_class, size=entry.size_bytes)
        except FileNotFoundError as exc:
            raise LakeStateError(
                f"feed {feed!r}: {where} is listed but missing, so it cannot move to "
                f"{storage_class}; nothing of it changed. Run `lakeexportd verify {feed}` "
                f"and re-export its rows with `lakeexportd backfill {feed}`") from exc
        except PreconditionFailed as exc:
            raise LakeStateError(
                f"feed {feed!r}: {where} is not the file _metadata.json lists "
                f"({exc.strerror}), so it was not moved to {storage_class}. Run "
                f"`lakeexportd verify {feed}` to see what changed it") from exc
        except PermissionError as exc:
            raise ConfigError(
                f"feed {feed!r}: the store refused to rewrite {where} in {storage_class} "
                f"({exc.strerror}): lakeexportd's credentials need read and write (PutObject "
                "with a storage class / Put Blob with an access tier) on the lake") from exc
        except OSError as exc:
            raise StoreUnavailable(
                f"feed {feed!r}: could not move {where} to {storage_class} ({exc.strerror or exc}"
                "); it is still whole in its old class, and the next tiering run tries "
                "again") from exc


def _after(doc: StreamMetadata, plan: list[Move], storage_class: str) -> dict[str | None, int]:
    """Bytes per class once ``plan`` is done (what a dry run reports)."""
    out = doc.bytes_per_tier()
    for move in plan:
        for f in move.files:
            out[f.tier] -= f.size_bytes
            out[storage_class] = out.get(storage_class, 0) + f.size_bytes
    return {tier: size for tier, size in out.items() if size}
