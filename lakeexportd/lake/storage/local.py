"""The lake on a local (or mounted) file system: today's behaviour, behind the storage seam.

Publishing is "write a temp in the same directory, fsync it, rename over, fsync the
directory"; new files are made with ``O_EXCL`` and exact modes whatever the umask; promotions
are renames that refuse to replace; locks are ``flock`` on files that are never deleted, so
the kernel frees them when their holder dies, however it dies.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePath

import pyarrow as pa

from lakeexportd.errors import LakeStateError
from lakeexportd.failpoints import failpoint
from lakeexportd.lake.storage.base import (
    ANY,
    Entry,
    Held,
    PreconditionFailed,
    Signature,
    Writable,
    _Anything,
)

_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class _Flock:
    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def holding(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def fsync_path(path: PurePath, *, directory: bool = False) -> None:
    """fsync a file, or a directory (after a rename in it, so the rename survives a crash)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class LocalStorage:
    """``Storage`` on a POSIX file system; locations are absolute paths."""

    atomic_rename = True
    leases = False
    """``rename_dir`` is one ``rename``: a staged table version appears whole."""

    def show(self, path: PurePath) -> str:
        return str(path)

    def table_location(self, path: PurePath) -> tuple[str, dict[str, str]]:
        return str(Path(path).absolute()), {}

    storage_classes: frozenset[str] = frozenset()
    """A disk has no storage classes: tiering is for object stores."""

    def rewrite_in_class(self, path: PurePath, storage_class: str, *, size: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "a local disk has no storage classes (tiering needs "
                      "an object-store lake)", str(path))

    # -- reading ----------------------------------------------------------------------------
    def exists(self, path: PurePath) -> bool:
        return os.path.exists(path)

    def is_dir(self, path: PurePath) -> bool:
        return os.path.isdir(path)

    def read_bytes(self, path: PurePath) -> bytes:
        return Path(path).read_bytes()

    def signature(self, path: PurePath) -> Signature | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def size(self, path: PurePath) -> int:
        return os.stat(path).st_size

    def open_read(self, path: PurePath) -> pa.NativeFile:
        return pa.OSFile(str(path), mode="r")

    def list_dir(self, path: PurePath) -> list[Entry]:
        try:
            scan = os.scandir(path)
        except (FileNotFoundError, NotADirectoryError):
            return []
        entries = []
        with scan:
            for item in scan:
                try:
                    st = item.stat(follow_symlinks=False)
                    is_dir = item.is_dir(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while listing
                entries.append(Entry(Path(item.path), is_dir, st.st_size,
                                     st.st_mtime_ns))
        return sorted(entries, key=lambda e: e.name)

    def walk_files(self, path: PurePath) -> Iterator[Entry]:
        for entry in self.list_dir(path):
            if entry.is_dir:
                yield from self.walk_files(entry.path)
            else:
                yield entry

    def check_inside(self, base: PurePath, candidate: PurePath) -> None:
        resolved_base = Path(base).resolve()
        resolved = Path(candidate).resolve()
        if resolved != resolved_base and resolved_base not in resolved.parents:
            raise LakeStateError(
                f"{candidate} resolves to {resolved}, outside {resolved_base}; lakeexportd only "
                "touches files inside a feed's folder (check for symlinks or a bad name)"
            )

    # -- writing ----------------------------------------------------------------------------
    def publish(
        self, path: PurePath, data: bytes, *, file_mode: int, dir_mode: int | None = None,
        failpoint_prefix: str | None = None, expected: Signature | None | _Anything = ANY,
    ) -> Signature:
        if not isinstance(expected, _Anything) and self.signature(path) != expected:
            raise PreconditionFailed(
                errno.EEXIST if expected is None else errno.ESTALE,
                "exists already" if expected is None else "changed since it was read",
                str(path),
            )

        def step(name: str) -> None:
            if failpoint_prefix is not None:
                failpoint(f"{failpoint_prefix}.{name}")

        parent = path.parent
        if dir_mode is not None and not os.path.isdir(parent):
            self.make_dirs(parent, dir_mode)
        tmp = parent / f".{path.name}.tmp"
        try:
            step("before_tmp_write")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, file_mode)
            try:
                os.fchmod(fd, file_mode)
                _write_all(fd, data)
                step("after_tmp_write")
                os.fsync(fd)
            finally:
                os.close(fd)
            step("after_tmp_fsync")
            os.replace(tmp, path)
            step("after_replace")
            fsync_path(parent, directory=True)
            step("after_dir_fsync")
        finally:
            # After a successful replace there is nothing to remove; a temp left by a crash is
            # a dot file that orphan cleanup removes.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        signature = self.signature(path)
        assert signature is not None  # just written; nobody deletes it
        return signature

    def create(self, path: PurePath, *, file_mode: int) -> Writable:
        # O_EXCL: never write into a file someone else owns; explicit fchmod: raw data must
        # not be world-readable even for the life of a temp file, whatever the umask.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, file_mode)
        try:
            os.fchmod(fd, file_mode)
        finally:
            os.close(fd)
        try:
            # Arrow's own file: its writes release the GIL, so encoding threads never wait on
            # Python for I/O (a Python file object would take the GIL for every page).
            sink: Writable = pa.OSFile(str(path), mode="w")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return sink

    def sync_file(self, path: PurePath) -> None:
        fsync_path(path)

    def promote(self, source: PurePath, target: PurePath) -> None:
        # One writer per feed holds the feed's lock, so checking first is enough; rename (not
        # link) works on every file system a lake may live on.
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "already exists", str(target))
        os.rename(source, target)

    def rename_dir(self, source: PurePath, target: PurePath) -> None:
        """Give a whole directory a new name in one step (refused if ``target`` exists)."""
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "exists", str(target))
        os.rename(source, target)

    def sync(self, directories: Iterable[PurePath]) -> None:
        # Deepest first: a new directory's own entries before its name in the parent.
        for directory in sorted(set(directories), key=lambda p: len(p.parts), reverse=True):
            fsync_path(directory, directory=True)

    def make_dirs(self, path: PurePath, dir_mode: int) -> list[PurePath]:
        missing: list[PurePath] = []
        probe = path
        while not os.path.exists(probe):
            missing.append(probe)
            probe = probe.parent
        created = []
        for directory in reversed(missing):
            try:
                os.mkdir(directory, dir_mode)
            except FileExistsError:
                continue
            os.chmod(directory, dir_mode)  # umask may have removed bits
            created.append(directory)
        return created

    def delete(self, path: PurePath) -> bool:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True

    def remove_dir(self, path: PurePath) -> bool:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise
        return True

    def delete_tree(self, path: PurePath) -> None:
        shutil.rmtree(path)

    def check_conditional_writes(self, root: PurePath) -> list[str]:
        # On disk the fences are ours: compare-then-rename under the feed's flock. What can
        # fail is the folder itself: not writable, or a file system without flock.
        path = root / f".lakeexportd-check-{secrets.token_hex(8)}"
        problems = []
        try:
            self.make_dirs(root, 0o750)
            first = self.publish(path, b"1", file_mode=0o600, expected=None)
            try:
                self.publish(path, b"2", file_mode=0o600, expected=None)
                problems.append("create-if-absent is not refused")
            except PreconditionFailed:
                pass
            self.publish(path, b"3", file_mode=0o600, expected=first)
            held = self.try_lock(path.with_name(path.name + ".lock"), file_mode=0o600)
            if held is None or self.try_lock(path.with_name(path.name + ".lock"),
                                             file_mode=0o600) is not None:
                problems.append("flock does not exclude a second holder on this file system")
            if held is not None:
                held.release()
        finally:
            for leftover in (path, path.with_name(path.name + ".lock")):
                with contextlib.suppress(OSError):
                    self.delete(leftover)
        return problems

    # -- locks ------------------------------------------------------------------------------
    def try_lock(
        self, path: PurePath, *, file_mode: int, note: bytes = b"", shared: bool = False,
    ) -> Held | None:
        operation = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                held = self._create_locked(path, file_mode, note, operation)
                if held is None:
                    continue  # someone else created it first: lock theirs
                return held
            try:
                fcntl.flock(fd, operation)
            except OSError as exc:
                os.close(fd)
                if exc.errno in _BUSY:
                    return None
                raise
            if not os.path.exists(path) or os.stat(path).st_ino != os.fstat(fd).st_ino:
                # Removed or replaced between open and flock (a stale entry being cleared):
                # this inode is no longer the lock.
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                continue
            if note and not shared:
                with contextlib.suppress(OSError):  # the note is a hint, the flock is the lock
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, note, 0)
            return _Flock(fd)

    def _create_locked(
        self, path: PurePath, file_mode: int, note: bytes, operation: int
    ) -> Held | None:
        """Make the lock file already locked and written: nobody sees it unlocked or empty."""
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, file_mode)
        try:
            os.fchmod(fd, file_mode)
            fcntl.flock(fd, operation)
            _write_all(fd, note)
            try:
                os.link(tmp, path)  # unlike rename, never replaces a lock someone holds
            except FileExistsError:
                os.close(fd)
                return None
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return _Flock(fd)

    def lock_note(self, path: PurePath) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError:
            return b""

    def is_locked(self, path: PurePath) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in _BUSY:
                return True
            raise
        finally:
            os.close(fd)  # closing drops a lock taken here
        return False
