"""Which daemons run on a lake: one entry per daemon in ``<lake>/.daemons/``, held under flock.

A daemon writes ``<host>_<pid>.json`` (host, pid, start time, config file, metrics address)
and keeps an exclusive ``flock`` on it for its lifetime; the kernel drops the lock when the
process dies, however it dies. A reader learns whether an entry is live by asking for a shared
lock without waiting: refused means its daemon still runs. Reading takes no lock it keeps and
writes nothing, so ``lakeexportd status`` stays read-only. A starting daemon removes entries
whose lock it can take: they are provably leftovers of daemons that died.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import re
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from lakeexportd.errors import LakeStateError
from lakeexportd.lake.metadata_model import iso_utc

DIR_NAME = ".daemons"
_ENTRY = re.compile(r"[A-Za-z0-9_.-]+_\d+\.json")


@dataclass(frozen=True)
class DaemonInfo:
    host: str
    pid: int
    started: str
    config: str
    metrics: str
    version: str

    def describe(self) -> str:
        return (f"pid {self.pid} on {self.host} since {self.started} "
                f"(config {self.config}, metrics http://{self.metrics})")


def _directory(root: Path) -> Path:
    return root / DIR_NAME


def _live(path: Path) -> bool:
    """Whether a daemon holds ``path``'s lock (a shared lock is refused while it does)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


def _read(path: Path) -> DaemonInfo | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return DaemonInfo(**{k: data[k] for k in DaemonInfo.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None  # being written, or not ours: not a daemon we can describe


def live_daemons(root: Path) -> list[DaemonInfo]:
    """The daemons running on the lake at ``root`` now (read-only)."""
    directory = _directory(root)
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.iterdir()):
        if _ENTRY.fullmatch(path.name) and _live(path) and (info := _read(path)) is not None:
            found.append(info)
    return found


class Presence:
    """This daemon's entry; ``claim`` at start, ``release`` at stop."""

    def __init__(self, root: Path, *, config: str, metrics: str, version: str,
                 now: dt.datetime) -> None:
        host = socket.gethostname()
        self.info = DaemonInfo(host=host, pid=os.getpid(), started=iso_utc(now), config=config,
                               metrics=metrics, version=version)
        self.path = _directory(root) / f"{re.sub(r'[^A-Za-z0-9_.-]', '-', host)}_{os.getpid()}.json"
        self._fd: int | None = None

    def claim(self) -> list[DaemonInfo]:
        """Write and lock this daemon's entry; the other daemons running on the lake."""
        directory = self.path.parent
        # Locked and written under a temp name, then renamed: the entry is never seen unlocked
        # (another daemon would take it for a leftover) or half written.
        tmp = directory / f".{self.path.name}.tmp"
        fd: int | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._remove_stale(directory)
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, (json.dumps(asdict(self.info), indent=2) + "\n").encode())
            os.replace(tmp, self.path)
        except OSError as exc:
            if fd is not None:  # a full disk must not leave our half-made entry behind
                os.close(fd)
                with contextlib.suppress(OSError):
                    tmp.unlink()
            raise LakeStateError(f"cannot write {self.path} ({exc}); is the lake writable?") \
                from exc
        self._fd = fd
        return [d for d in live_daemons(directory.parent) if d.pid != self.info.pid
                or d.host != self.info.host]

    def _remove_stale(self, directory: Path) -> None:
        for path in directory.iterdir():
            if _ENTRY.fullmatch(path.name) and path != self.path and not _live(path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None
