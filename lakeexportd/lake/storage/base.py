"""The storage seam: the one small interface through which everything reads and writes the lake.

Locations are ``PurePath`` values under the store's root (the local store is given
absolute paths, which ``pathlib.Path`` already is), so the lake's layout code stays the same
whatever holds the bytes. What a store must guarantee, whatever it is:

- ``publish`` replaces a small document atomically: a reader sees the old bytes or the new,
  never a mix, and once it returns the new bytes survive a crash;
- ``create`` opens a new file for streaming writes that nobody else owns; ``promote`` gives a
  finished file its final name without ever replacing another file, and ``sync`` makes a
  series of promotions and removals durable at once;
- ``try_lock`` holds a named lock that frees itself when its holder dies.

Object stores plug in here too (``object.py``); nothing above ``lake/`` touches files
directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Protocol

import pyarrow as pa

Signature = tuple[int | str, ...]
"""What ``signature`` returns: equal signatures mean "unchanged since read" (compare only;
on disk inode, size and mtime, on an object store the ETag)."""


class _Anything:
    def __repr__(self) -> str:
        return "ANY"


ANY = _Anything()
"""``publish(expected=ANY)``: replace whatever is there (the default)."""


class PreconditionFailed(OSError):
    """``publish(expected=...)`` found another version than expected: nothing was written."""


@dataclass(frozen=True)
class Entry:
    """One name in a listed directory."""

    path: PurePath
    is_dir: bool
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return self.path.name


class Writable(Protocol):
    """A file being written (what ``pyarrow.parquet.ParquetWriter`` accepts as its sink)."""

    def write(self, data: bytes) -> int: ...

    def close(self) -> None: ...


class Held(Protocol):
    """A lock this process holds; ``release`` (or the process's death) frees it."""

    def holding(self) -> bool:
        """Whether it is still held (a lease can be lost; a flock cannot)."""
        ...

    def release(self) -> None: ...


class Storage(Protocol):
    """Reads and writes of one lake; every method raises ``OSError`` subclasses on failure."""

    @property
    def atomic_rename(self) -> bool:
        """Whether ``rename_dir`` is one step (a local rename). Object stores copy object by
        object, so there a table version is written in place and ``_metadata.json`` alone
        says it is complete."""
        ...

    @property
    def leases(self) -> bool:
        """Whether locks are lease objects that expire (object stores) rather than locks the
        kernel frees when their holder dies (``flock``); lock files are named accordingly."""
        ...

    def show(self, path: PurePath) -> str:
        """``path`` as an operator finds it (a file name, a URL) for messages."""
        ...

    def table_location(self, path: PurePath) -> tuple[str, dict[str, str]]:
        """The URI and the options with which a table-format library (delta-rs) opens the
        folder ``path``: the same store, named the way object_store names its options."""
        ...

    # -- reading ----------------------------------------------------------------------------
    def exists(self, path: PurePath) -> bool: ...

    def is_dir(self, path: PurePath) -> bool: ...

    def read_bytes(self, path: PurePath) -> bytes:
        """The whole file; ``FileNotFoundError`` when there is none."""
        ...

    def signature(self, path: PurePath) -> Signature | None:
        """A fingerprint that changes whenever the file is replaced; ``None`` when missing."""
        ...

    def size(self, path: PurePath) -> int: ...

    def open_read(self, path: PurePath) -> pa.NativeFile:
        """A seekable reader for pyarrow (Parquet footers, pages); the caller closes it."""
        ...

    def list_dir(self, path: PurePath) -> list[Entry]:
        """The names directly in ``path``, sorted; empty when ``path`` does not exist."""
        ...

    def walk_files(self, path: PurePath) -> Iterator[Entry]:
        """Every file below ``path``, at any depth (no order promised)."""
        ...

    def check_inside(self, base: PurePath, candidate: PurePath) -> None:
        """Refuse (``LakeStateError``) a ``candidate`` that leads outside ``base``, symlinks
        included: nothing is written or deleted outside a feed's own folder."""
        ...

    # -- writing ----------------------------------------------------------------------------
    def publish(
        self, path: PurePath, data: bytes, *, file_mode: int, dir_mode: int | None = None,
        failpoint_prefix: str | None = None, expected: Signature | None | _Anything = ANY,
    ) -> Signature:
        """Atomically replace ``path`` with ``data`` and make it durable; its new signature.

        ``expected`` makes it conditional: ``None`` means create only if absent, a signature
        means replace only that version (If-Match); otherwise ``PreconditionFailed`` and
        nothing written. On disk the check and the rename are not one step: the caller holds
        the feed's lock. On an object store they are one request.
        ``dir_mode`` creates missing parent directories first. With ``failpoint_prefix``
        the steps are named for crash tests: ``before_tmp_write``, ``after_tmp_write``,
        ``after_tmp_fsync``, ``after_replace``, ``after_dir_fsync``.
        """
        ...

    def create(self, path: PurePath, *, file_mode: int) -> Writable:
        """A new, empty file opened for writing; ``FileExistsError`` if the name is taken."""
        ...

    def sync_file(self, path: PurePath) -> None:
        """Make a closed file's bytes durable."""
        ...

    def promote(self, source: PurePath, target: PurePath) -> None:
        """Give ``source`` the name ``target``; ``FileExistsError`` if ``target`` exists."""
        ...

    def rename_dir(self, source: PurePath, target: PurePath) -> None:
        """Give a whole directory a new name in one step; ``FileExistsError`` if taken."""
        ...

    def sync(self, directories: Iterable[PurePath]) -> None:
        """Make names created or removed in ``directories`` survive a crash."""
        ...

    def make_dirs(self, path: PurePath, dir_mode: int) -> list[PurePath]:
        """Create ``path`` and missing parents with ``dir_mode`` exactly; the created ones."""
        ...

    def delete(self, path: PurePath) -> bool:
        """Remove a file; ``False`` if it was already gone."""
        ...

    def remove_dir(self, path: PurePath) -> bool:
        """Remove an empty directory; ``False`` if it is missing or not empty."""
        ...

    def delete_tree(self, path: PurePath) -> None:
        """Remove a directory and everything in it."""
        ...

    def check_conditional_writes(self, root: PurePath) -> list[str]:
        """What this store fails to enforce of create-if-absent and If-Match (empty: both).

        Writes and removes one scratch file under the lake's ``root``. Errors other than a
        missing fence (no access, no network) raise ``OSError``.
        """
        ...

    # -- storage classes --------------------------------------------------------------------
    @property
    def storage_classes(self) -> frozenset[str]:
        """The colder classes ``rewrite_in_class`` moves objects to (empty: none; a local
        disk has no classes)."""
        ...

    def rewrite_in_class(self, path: PurePath, storage_class: str, *, size: int) -> None:
        """Rewrite the object at ``path``, same name and bytes, in ``storage_class``.

        ``size`` is the size the caller knows it by: an object of another size is refused
        (``PreconditionFailed``) and left alone, and so is one replaced while it is read.
        Until the new object is complete, readers see the old one whole.
        ``OSError(EOPNOTSUPP)`` where the store has no such class.
        """
        ...

    # -- locks ------------------------------------------------------------------------------
    def try_lock(
        self, path: PurePath, *, file_mode: int, note: bytes = b"", shared: bool = False,
    ) -> Held | None:
        """Take the lock named ``path`` without waiting; ``None`` if another holder has it.

        ``note`` (a pid, a description) is stored with the lock for ``lock_note``.
        """
        ...

    def lock_note(self, path: PurePath) -> bytes:
        """What the current holder stored with the lock (empty if unknown)."""
        ...

    def is_locked(self, path: PurePath) -> bool:
        """Whether someone holds the lock named ``path`` now (read-only)."""
        ...
