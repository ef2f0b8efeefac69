"""Which daemons run on a lake: one entry per daemon in ``<lake>/.daemons/``, held as a lock.

A daemon writes ``<host>_<pid>.json`` (host, pid, start time, config file, metrics address)
and holds it as a lock of the lake's storage for its lifetime (on disk an exclusive ``flock``,
which the kernel drops when the process dies, however it dies). A reader learns whether an
entry is live with ``Storage.is_locked``: locked means its daemon still runs. Reading takes no
lock it keeps and writes nothing, so ``lakeexportd status`` stays read-only. A starting daemon
removes entries whose lock it can take: they are provably leftovers of daemons that died.

On an object store an entry is a lease, and a lease proves its holder dead only to a process
that has watched it unchanged for a whole ttl: at start every entry looks live. So there a
running daemon calls ``sweep`` every ttl, and removes the entries it has seen go stale.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from lakeexportd.errors import LakeStateError
from lakeexportd.lake.metadata_model import iso_utc
from lakeexportd.lake.storage import LOCAL, Held, Storage

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


def _read(storage: Storage, path: Path) -> DaemonInfo | None:
    """The entry's daemon: the lock's note (the file on disk; on an object store the note
    inside the lease document, which also carries the lease's owner, epoch and ttl)."""
    try:
        data = json.loads(storage.lock_note(path))
        return DaemonInfo(**{k: data[k] for k in DaemonInfo.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None  # being written, or not ours: not a daemon we can describe


def live_daemons(root: Path, storage: Storage = LOCAL) -> list[DaemonInfo]:
    """The daemons running on the lake at ``root`` now (read-only)."""
    found = []
    for entry in storage.list_dir(_directory(root)):
        path = Path(entry.path)
        if (_ENTRY.fullmatch(entry.name) and storage.is_locked(path)
                and (info := _read(storage, path)) is not None):
            found.append(info)
    return found


class Presence:
    """This daemon's entry; ``claim`` at start, ``release`` at stop."""

    def __init__(self, root: Path, *, config: str, metrics: str, version: str,
                 now: dt.datetime, storage: Storage = LOCAL) -> None:
        host = socket.gethostname()
        self.info = DaemonInfo(host=host, pid=os.getpid(), started=iso_utc(now), config=config,
                               metrics=metrics, version=version)
        self.path = _directory(root) / f"{re.sub(r'[^A-Za-z0-9_.-]', '-', host)}_{os.getpid()}.json"
        self._storage = storage
        self._held: Held | None = None

    def claim(self) -> list[DaemonInfo]:
        """Write and lock this daemon's entry; the other daemons running on the lake."""
        storage = self._storage
        directory = self.path.parent
        note = (json.dumps(asdict(self.info), indent=2) + "\n").encode()
        try:
            storage.make_dirs(directory, 0o755)
            self._remove_stale(directory)
            # The storage makes the entry appear already locked and written: another daemon
            # never sees it unlocked (and takes it for a leftover) or half written.
            held = storage.try_lock(self.path, file_mode=0o644, note=note)
        except OSError as exc:
            raise LakeStateError(f"cannot write {self.path} ({exc}); is the lake writable?") \
                from exc
        if held is None:
            raise LakeStateError(f"{self.path} is held by a running process with this pid")
        self._held = held
        return [d for d in live_daemons(directory.parent, storage)
                if d.pid != self.info.pid or d.host != self.info.host]

    def _remove_stale(self, directory: Path) -> list[Path]:
        removed = []
        for entry in self._storage.list_dir(directory):
            path = Path(entry.path)
            if (_ENTRY.fullmatch(entry.name) and path != self.path
                    and not self._storage.is_locked(path)):
                self._storage.delete(path)
                removed.append(path)
        return removed

    def sweep(self) -> list[Path]:
        """Remove the entries of daemons that died (on an object store: whose lease this
        process has seen unchanged for a ttl); the entries removed."""
        if self._held is None:
            return []
        try:
            return self._remove_stale(self.path.parent)
        except OSError as exc:
            raise LakeStateError(f"cannot sweep {self.path.parent} ({exc})") from exc

    def release(self) -> None:
        if self._held is None:
            return
        with contextlib.suppress(OSError):
            self._storage.delete(self.path)
        self._held.release()
        self._held = None
