from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lakeexportd.errors import FeedLocked
from lakeexportd.lake.locking import FeedLock

HOLDER = (
    "import sys, time, pathlib\n"
    "from lakeexportd.lake.locking import FeedLock\n"
    "with FeedLock(pathlib.Path(sys.argv[1]), feed='tx', wait=5):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(float(sys.argv[2]))\n"
)


def _hold(feed_dir: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(feed_dir), str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def _stop(proc: subprocess.Popen[str], *, kill: bool = True) -> None:
    if kill:
        proc.kill()
    proc.communicate()


def test_second_process_gets_feed_locked_with_clear_message(tmp_path: Path) -> None:
    """While another process holds the lock, a writer waits lock_wait then gets FeedLocked."""
    feed = tmp_path / "streams" / "tx"
    proc = _hold(feed, 30)
    try:
        started = time.monotonic()
        with pytest.raises(FeedLocked) as info, FeedLock(feed, feed="tx", wait=0.3):
            pass
        assert 0.3 <= time.monotonic() - started < 5
        message = str(info.value)
        assert "'tx'" in message and "another lakeexportd process" in message
        assert f"pid {proc.pid}" in message and "skipped" in message
    finally:
        _stop(proc)


def test_lock_acquired_once_holder_releases(tmp_path: Path) -> None:
    """A waiter gets the lock as soon as the holder exits within lock_wait."""
    feed = tmp_path / "tx"
    proc = _hold(feed, 0.3)
    try:
        with FeedLock(feed, feed="tx", wait=10) as lock:
            assert lock.path.read_text().strip() == str(os.getpid())
    finally:
        _stop(proc, kill=False)


def test_lock_freed_when_holder_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the holder frees the lock: no stale lock needs manual removal."""
    feed = tmp_path / "tx"
    proc = _hold(feed, 60)
    _stop(proc)
    with FeedLock(feed, feed="tx", wait=1):
        assert (feed / ".lock").exists()


def test_lock_excludes_within_one_process_too(tmp_path: Path) -> None:
    """Two FeedLock objects on the same feed exclude each other (flock is per open file)."""
    with FeedLock(tmp_path, feed="tx", wait=0), pytest.raises(FeedLocked):
        FeedLock(tmp_path, feed="tx", wait=0.1).acquire()
    with FeedLock(tmp_path, feed="tx", wait=0):
        pass


def test_lock_file_is_kept_after_release(tmp_path: Path) -> None:
    """Releasing never deletes .lock (deleting would let two writers lock different inodes)."""
    with FeedLock(tmp_path, feed="tx", wait=0):
        pass
    assert (tmp_path / ".lock").exists()
