"""The one lock helper: wait for a named lock of the lake's storage, or say who holds it.

A feed has one writer across processes (``<feed dir>/.lock``); the feed registry has one
read-modify-write at a time (``feeds/.lock``). Both wait the same way here, whatever the
storage. Lock files are never deleted: unlinking one while another process waits on the old
inode would let two writers hold "the" lock at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path, PurePath
from types import TracebackType

from lakeexportd.errors import FeedLocked, LakeStateError
from lakeexportd.failpoints import failpoint
from lakeexportd.lake import layout
from lakeexportd.lake.storage import LOCAL, Held, Storage


class Lock:
    """``with Lock(path, what=..., wait=10):`` holds the lock named ``path`` or raises.

    ``wait=None`` waits as long as it takes. ``busy`` builds the error raised when the wait
    is over (it gets the holder's pid hint, e.g. ``" (pid 42)"``, or ``""``).
    """

    def __init__(
        self,
        path: PurePath,
        *,
        wait: float | None,
        busy: Callable[[str], Exception],
        storage: Storage = LOCAL,
        poll: float = 0.05,
        file_mode: int = 0o640,
        dir_mode: int = 0o750,
        failpoints: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = path
        self._wait = wait
        self._busy = busy
        self._storage = storage
        self._poll = poll
        self._file_mode = file_mode
        self._dir_mode = dir_mode
        self._failpoints = failpoints
        self._monotonic = monotonic
        self._sleep = sleep
        self._held: Held | None = None
        # Object stores: the owner (host:pid:token) of the unreleased lease this acquisition
        # took over after its ttl, i.e. a holder that died or hung; None otherwise.
        self.previous_holder: str | None = None

    def acquire(self) -> None:
        storage = self._storage
        where = storage.show(self.path)
        deadline = None if self._wait is None else self._monotonic() + self._wait
        note = f"{os.getpid()}\n".encode()  # a hint for the message: the lock is the lock
        while True:
            try:
                if not storage.is_dir(self.path.parent):
                    storage.make_dirs(self.path.parent, self._dir_mode)
                held = storage.try_lock(self.path, file_mode=self._file_mode, note=note)
            except OSError as exc:
                raise LakeStateError(f"cannot lock {where}: {exc}") from exc
            if held is not None:
                break
            if deadline is not None and self._monotonic() >= deadline:
                text = storage.lock_note(self.path).decode(errors="replace").strip()
                raise self._busy(f" (pid {text})" if text.isdigit() else "")
            self._sleep(self._poll)
        self._held = held
        self.previous_holder = getattr(held, "took_over", None)
        if self._failpoints:
            failpoint(f"{self._failpoints}.after_acquire")

    def check(self) -> None:
        """Raise ``LakeStateError`` unless the lock is still held (a lease can be lost)."""
        if self._held is None or not self._held.holding():
            raise LakeStateError(
                f"lost {self._storage.show(self.path)} (not renewed within its ttl, or taken "
                "over): this run stops before its commit, so nothing of it is published; "
                "the next run exports its rows again"
            )

    def release(self) -> None:
        if self._held is None:
            return
        if self._failpoints:
            failpoint(f"{self._failpoints}.before_release")
        held, self._held = self._held, None
        held.release()

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class FeedLock(Lock):
    """``with FeedLock(feed_dir, feed="orders", wait=10):`` one writer per feed or FeedLocked."""

    def __init__(
        self,
        feed_dir: Path,
        *,
        feed: str,
        wait: float,
        storage: Storage = LOCAL,
        poll: float = 0.05,
        dir_mode: int = 0o750,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        path = layout.lock_path(feed_dir, lease=storage.leases)
        where = storage.show(path)

        def busy(holder: str) -> Exception:
            return FeedLocked(
                f"feed {feed!r} is locked by another lakeexportd process{holder} that "
                f"is exporting or repairing it (waited {wait:g}s for {where}); "
                "this run is skipped and the next tick tries again. If no lakeexportd "
                "is running, the lock frees itself when its holder exits"
            )

        super().__init__(path, wait=wait, busy=busy, storage=storage, poll=poll,
                         dir_mode=dir_mode, failpoints="lock", monotonic=monotonic, sleep=sleep)
        self.feed = feed


class HeldLock:
    """A lock this thread already holds, passed to work done under it (a realtime feed's
    compaction): entering and leaving change nothing, ``check`` asks the real lock."""

    def __init__(self, lock: Lock) -> None:
        self._lock = lock

    def check(self) -> None:
        self._lock.check()

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
