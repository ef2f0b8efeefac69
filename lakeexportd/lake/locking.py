"""One writer per feed across processes: an exclusive ``flock`` on ``<feed dir>/.lock``.

The lock file is never deleted: unlinking it while another process waits on the old inode
would let two writers hold "the" lock at once.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from lakeexportd.errors import FeedLocked, LakeStateError
from lakeexportd.failpoints import failpoint
from lakeexportd.lake import layout
from lakeexportd.lake.durable import make_dirs


class FeedLock:
    """``with FeedLock(feed_dir, feed="orders", wait=10):`` holds the feed's lock or raises."""

    def __init__(
        self,
        feed_dir: Path,
        *,
        feed: str,
        wait: float,
        poll: float = 0.05,
        dir_mode: int = 0o750,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = layout.lock_path(feed_dir)
        self.feed = feed
        self._wait = wait
        self._poll = poll
        self._dir_mode = dir_mode
        self._monotonic = monotonic
        self._sleep = sleep
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            if not self.path.parent.exists():
                make_dirs(self.path.parent, self._dir_mode)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise LakeStateError(f"cannot open the lock file {self.path}: {exc}") from exc
        deadline = self._monotonic() + self._wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise LakeStateError(f"cannot lock {self.path}: {exc}") from exc
            if self._monotonic() >= deadline:
                holder = _read_holder(fd)
                os.close(fd)
                raise FeedLocked(
                    f"feed {self.feed!r} is locked by another lakeexportd process{holder} that "
                    f"is exporting or repairing it (waited {self._wait:g}s for {self.path}); "
                    "this run is skipped and the next tick tries again. If no lakeexportd "
                    "is running, the lock frees itself when its holder exits"
                )
            self._sleep(self._poll)
        # The pid is only a hint for the message above; flock, not the content, is the lock.
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        self._fd = fd
        failpoint("lock.after_acquire")

    def release(self) -> None:
        if self._fd is None:
            return
        failpoint("lock.before_release")
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> FeedLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""
