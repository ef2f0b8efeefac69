"""The lake on an object store (S3 and compatibles, Azure Blob / ADLS Gen2, GCS), via obstore.

``obstore`` is the Python face of Rust ``object_store``: one client for every cloud, the
clouds' standard credential chains, and conditional PUTs. How the seam's promises are kept
where there are no files, directories, renames, fsync or flock (DESIGN.md section 11):

Locations and keys
    A store is given a ``root`` location (a ``PurePosixPath`` that reads like the URL, e.g.
    ``/bucket/prefix`` for ``s3://bucket/prefix``); a location's object key is its path
    relative to that root, and the obstore store itself is scoped to the URL's prefix.
    ``show`` renders ``s3://bucket/prefix/key``: never a credential (the URL is stripped of
    passwords and queries, and error texts are scrubbed, see ``_scrub``).

Directories
    There are none: a "directory" is a key prefix with at least one object under it.
    ``make_dirs`` creates nothing (returns ``[]``), ``exists`` and ``is_dir`` look for an
    object or a prefix, ``remove_dir`` says ``True`` when nothing is left under the prefix,
    ``delete_tree`` deletes every object under it. Modes (``file_mode``, ``dir_mode``) are
    ignored: access belongs to the bucket policy or RBAC.

Durability
    A PUT (or a multipart upload's completion) that returned is durable and all-or-nothing,
    so ``sync`` and ``sync_file`` do nothing.

``publish``
    One PUT: ``expected=None`` is ``mode="create"`` (If-None-Match: *), a signature is an
    update with its ETag (and version) (If-Match), ``ANY`` a plain overwrite. The check and
    the write are one request, so the fence holds without the feed lock. A signature is
    ``(e_tag,)``, or ``(e_tag, version)`` on stores that version objects; on S3 the ETag is
    the bytes' MD5, so the same bytes written again keep their signature (the metadata
    document carries its run's id, so two commits never look alike). Failpoints: the
    prefix's ``before_tmp_write`` before the PUT (nothing written), then ``after_replace``
    and ``after_dir_fsync`` after it (both mean "visible and durable" here); there is no
    temp, so ``after_tmp_write`` and ``after_tmp_fsync`` never fire.

``create``
    Streams through obstore's ``WritableFile`` (a multipart upload in ``part_size`` parts,
    ``upload_concurrency`` in flight, for a file larger than one part; a smaller one goes in
    one PUT at ``close``: memory stays near ``part_size * (concurrency + 1)`` per open file,
    whatever the file's size). The object appears only when ``close``
    completes the upload; a writer that dies leaves an incomplete upload, invisible, that a
    bucket lifecycle rule should abort. Multipart completion cannot be made conditional
    through obstore, so ``create`` checks the name with a HEAD first: between the check and
    the completion another writer could take the name. That is acceptable because one
    writer per feed holds the feed's lease, as on disk. ``_Upload.abort`` drops an upload
    without ever making the object visible (a sink's ``abort`` calls it, through
    ``parquet_writer``).

``promote``
    No rename: a server-side copy, then the source is deleted. The copy is made with
    ``overwrite=False`` (atomic create-if-absent) where the store offers it: Azure, GCS,
    the memory store, and S3 when ``copy_if_not_exists`` is configured (``multipart`` on
    AWS). Plain S3 says "not supported"; then (remembered for the store's life) the target
    is checked with a HEAD and copied over, the same documented race as ``create``. S3
    copies one object of at most 5 GiB. The sinks do not promote on object stores: they
    ``create`` each data object under its final name (DESIGN.md section 11).

``rename_dir`` and ``atomic_rename``
    A directory is renamed object by object (copy, then delete the sources): not one step,
    so a reader can see a half-moved version. ``atomic_rename`` is ``False`` here (``True``
    on disk): so on object stores the snapshot sink writes a table version in place, with
    ``current_version`` in ``_metadata.json`` the only completeness signal.

Locks are leases
    ``try_lock`` writes a lease object (JSON: owner, epoch, ttl, renewal time, note) with
    ``mode="create"``. When it exists, a contender takes it over (If-Match, epoch + 1) only when
    it was released, or when this process has seen the same ETag for a whole ttl on its own
    monotonic clock: clocks between machines are never compared. The observations are kept in
    the storage object, so a caller that polls ``try_lock`` (``lake.locking``) takes a dead
    holder's lease after one ttl. ``release`` cannot delete conditionally (object_store has no
    conditional DELETE), and an unconditional delete could remove a successor's lease; so it
    overwrites the lease If-Match with a released tombstone, which the next contender takes over
    at once. A feed's lease object, like a lock file on disk, is never deleted (daemon presence
    entries are: by their daemon when it stops, and by ``presence`` once seen stale for a ttl).
    ``_Lease.renew`` rewrites it If-Match (same epoch) and ``remaining`` says how long the
    holder may still act. Every lease write carries a random token: S3's ETag is the MD5 of the
    bytes, and a renewal with the same bytes would keep the very ETag a contender is timing. A
    held lease renews itself on a thread every ttl/3, and a run checks it (``Lock.check``) right
    before each commit, so it stops when a renewal failed or ``remaining`` reached zero (the
    conditional commit of ``_metadata.json`` fences a writer that is wrong anyway). Shared locks
    do not exist on object stores.

Errors
    obstore's errors become the ``OSError`` subclasses the seam promises: not found ->
    ``FileNotFoundError``, already exists -> ``FileExistsError`` (``PreconditionFailed`` in
    ``publish``), precondition -> ``PreconditionFailed``, permission or authentication ->
    ``PermissionError``, not supported -> ``OSError(EOPNOTSUPP)``, what object_store reports
    after its retries (refused or cut connections, timeouts, 5xx, throttling) ->
    ``StoreUnreachable`` (an ``OSError``, EIO: a passing error, exit 75), anything else ->
    ``OSError(EIO)``, each naming the location with ``show``, on one line.

Storage classes (tiering)
    ``rewrite_in_class`` moves an object to a colder class in place: object_store sets a
    class only when it writes (the ``Storage-Class`` attribute: ``x-amz-storage-class`` on
    S3, ``x-ms-access-tier`` on Azure), and has neither S3's CopyObject-onto-itself with a
    new class nor Azure's Set Blob Tier. So the object is read and written again under the
    same key with the same bytes and attributes: the GET is If-Match the ETag seen by a HEAD
    whose size must be the listed one; up to ``part_size`` bytes go back in one PUT If-Match
    that ETag, larger objects stream (GET chunks into a multipart upload, memory near
    ``part_size * (concurrency + 1)``), checked unchanged right before the upload completes
    (the feed's lease keeps lakeexportd's own writers off meanwhile). Readers see the old
    object whole until the new one is. Cost: one read and one write per object.

``check_conditional_writes`` proves, on a scratch key, that the store enforces
create-if-absent and If-Match (a store that ignores them breaks exactly-once and is refused).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePath, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import obstore
import obstore.exceptions as obx
import obstore.store
import pyarrow as pa

from lakeexportd.errors import ConfigError, LakeStateError, StoreUnreachable
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

if TYPE_CHECKING:
    from obstore import (
        GetResult,
        ObjectMeta,
        PutMode,
        PutResult,
        ReadableFile,
        UpdateVersion,
        WritableFile,
    )
    from obstore.store import ObjectStore

S3_CLASSES = frozenset({"STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"})
"""S3 storage classes colder than STANDARD that are still read at once (no restore)."""
AZURE_TIERS = frozenset({"Cool", "Cold"})
"""Azure Blob access tiers colder than Hot that are still online (Archive is not)."""

DEFAULT_LEASE_TTL = 30.0
"""Seconds a lease lives without renewal (DESIGN.md section 11: renewed every ttl/3)."""

DEFAULT_PART_SIZE = 8 * 1024 * 1024
"""Bytes per multipart part (S3's minimum is 5 MiB; 10,000 parts make 80 GB at most)."""

DEFAULT_UPLOAD_CONCURRENCY = 4
"""Parts of one file in flight at once."""

_TOP = PurePosixPath("/")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DEBUG_TAIL = re.compile(r"\n\s*\nDebug source:.*", re.DOTALL)
_URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#\"']*)[?#][^\s\"']*", re.IGNORECASE)


def _scrub(text: str, secrets_: Iterable[str] = ()) -> str:
    """An obstore error's text, safe for logs: first part only, no URL query, no secret.

    object_store redacts SAS URLs itself; this also drops the debug dump (request details)
    and any query string (pre-signed parameters), and masks every configured secret value.
    """
    text = _DEBUG_TAIL.sub("", text).strip()
    text = re.sub(r"\s*\n\s*", " ", text)  # one line (a store's XML error body has several)
    text = _URL_QUERY.sub(r"\1?<redacted>", text)
    for value in secrets_:
        if len(value) >= 4:
            text = text.replace(value, "<redacted>")
    return text


def _signature(meta: ObjectMeta | PutResult) -> Signature:
    e_tag, version = meta["e_tag"], meta["version"]
    if e_tag is None:
        raise OSError(errno.EOPNOTSUPP, "the object store returned no ETag; conditional "
                      "writes are impossible on it")
    return (e_tag,) if version is None else (e_tag, version)


def _update_mode(expected: Signature) -> UpdateVersion:
    if not 1 <= len(expected) <= 2 or not all(isinstance(v, str) for v in expected):
        raise PreconditionFailed(errno.ESTALE, f"{expected!r} is not an object signature")
    mode: UpdateVersion = {"e_tag": str(expected[0])}
    if len(expected) == 2:
        mode["version"] = str(expected[1])
    return mode


def _mtime_ns(meta: ObjectMeta) -> int:
    delta = meta["last_modified"] - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


class _Upload:
    """A multipart upload that ``pyarrow.parquet.ParquetWriter`` can write into.

    pyarrow wraps a Python sink in ``PythonFile``, which reads ``closed`` as an attribute;
    obstore's ``WritableFile.closed`` is a method, hence this adapter. ``close`` completes
    the upload (the object appears whole), ``abort`` drops it (nothing ever appears).
    """

    def __init__(self, writer: WritableFile, shown: str, scrub: Callable[[str], str]) -> None:
        self._writer = writer
        self._shown = shown
        self._scrub = scrub
        self._position = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._position

    def write(self, data: bytes) -> int:
        with _mapped(self._shown, self._scrub):
            written = self._writer.write(data)
        self._position += written
        return written

    def flush(self) -> None:
        """Nothing: parts go out as they fill, and only ``close`` makes the object exist."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _mapped(self._shown, self._scrub):
            self._writer.close()

    def abort(self) -> None:
        """Drop the upload: the object never appears (a no-op once closed)."""
        if self._closed:
            return
        self._closed = True
        with _mapped(self._shown, self._scrub):
            self._writer.__exit__(RuntimeError, RuntimeError("aborted"), None)


class _Reader:
    """A seekable reader over obstore's ``ReadableFile`` for ``pyarrow.PythonFile``."""

    def __init__(self, reader: ReadableFile, shown: str, scrub: Callable[[str], str]) -> None:
        self._reader = reader
        self._shown = shown
        self._scrub = scrub
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        with _mapped(self._shown, self._scrub):
            return bytes(self._reader.read(None if size is None or size < 0 else size))

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._reader.seek(offset, whence)

    def tell(self) -> int:
        return self._reader.tell()

    def close(self) -> None:
        self._closed = True
        self._reader.close()


@contextlib.contextmanager
def _mapped(shown: str, scrub: Callable[[str], str]) -> Iterator[None]:
    """Turn obstore's errors into the seam's ``OSError`` subclasses, naming ``shown``."""
    try:
        yield
    except (PreconditionFailed, FileExistsError):
        raise
    except FileNotFoundError as exc:
        raise FileNotFoundError(errno.ENOENT, "no such object", shown) from exc
    except obx.AlreadyExistsError as exc:
        raise FileExistsError(errno.EEXIST, "already exists", shown) from exc
    except obx.PreconditionError as exc:
        raise PreconditionFailed(errno.ESTALE, "changed since it was read", shown) from exc
    except (obx.PermissionDeniedError, obx.UnauthenticatedError) as exc:
        raise PermissionError(errno.EACCES, scrub(str(exc)), shown) from exc
    except (obx.NotSupportedError, NotImplementedError) as exc:
        # obstore raises the builtin NotImplementedError for a conditional put the store is
        # configured without (S3 with conditional_put: disabled)
        raise OSError(errno.EOPNOTSUPP, scrub(str(exc).split("\n")[0]), shown) from exc
    except obx.GenericError as exc:
        # what object_store reports after its retries: refused or cut connections, timeouts,
        # 5xx and throttling answers
        raise StoreUnreachable(errno.EIO, scrub(str(exc)), shown) from exc
    except obx.BaseError as exc:
        raise OSError(errno.EIO, scrub(str(exc)), shown) from exc
    except OSError as exc:
        if type(exc) is not OSError or exc.filename is not None:
            raise  # already one of ours
        # obstore's own IOErrors: a writer closed twice, ..., or (from a WritableFile) the
        # store's answer after the client's retries, which object_store calls "Generic"
        unreachable = str(exc).startswith("Generic ")
        raise (StoreUnreachable if unreachable else OSError)(
            exc.errno or errno.EIO, scrub(str(exc)), shown) from exc


@dataclass(frozen=True)
class _LeaseState:
    e_tag: str
    version: str | None
    epoch: int
    ttl: float
    released: bool
    note: bytes
    owner: str = ""


class _Lease:
    """A lease this process holds (``Held``). A daemon thread renews it every ttl/3 until
    ``release``; a renewal refused (taken over) marks it lost, and a holder that cannot
    renew for a whole ttl stops holding it (``holding()`` is False: no commit then)."""

    def __init__(
        self, storage: ObjectStorage, key: str, shown: str, result: PutResult, *,
        epoch: int, owner: str, note: bytes, written_at: float, took_over: str | None = None,
    ) -> None:
        self._storage = storage
        self.took_over = took_over  # the owner of the unreleased lease this one replaced
        self._key = key
        self._shown = shown
        self._mode = _update_mode(_signature(result))
        self.epoch = epoch
        self.owner = owner
        self._note = note
        self._written_at = written_at
        self.lost = False
        self.released = False
        self._guard = threading.Lock()  # renew (thread) and release (owner) share _mode
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_until_released, daemon=True,
                                         name=f"lease-renewal {shown}")
        self._renewer.start()

    def _renew_until_released(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except PreconditionFailed:
                return  # taken over: lost; holding() says so
            except OSError:
                continue  # the store is unreachable: try again; remaining() runs down

    def holding(self) -> bool:
        """Whether this process may still act as the holder (before a commit, say)."""
        return self.remaining() > 0

    @property
    def ttl(self) -> float:
        return self._storage.lease_ttl

    def remaining(self) -> float:
        """Seconds this holder may still act as the holder (<= 0: stop before committing).

        A contender starts its ttl no earlier than it saw our last write, which finished
        after we sent it: counting from the send is on the safe side.
        """
        if self.lost or self.released:
            return 0.0
        return self.ttl - (self._storage.monotonic() - self._written_at)

    def renew(self) -> None:
        """Rewrite the lease If-Match (same epoch); ``PreconditionFailed`` if it was lost."""
        with self._guard:
            if self.lost or self.released:
                raise PreconditionFailed(errno.ESTALE, "lease no longer held", self._shown)
            started = self._storage.monotonic()
            try:
                result = self._storage._put_lease(self._key, self._shown, self._mode,
                                                  epoch=self.epoch, owner=self.owner,
                                                  note=self._note)
            except (PreconditionFailed, FileNotFoundError) as exc:
                self.lost = True
                raise PreconditionFailed(errno.ESTALE, "lease taken over", self._shown) from exc
            self._mode = _update_mode(_signature(result))
            self._written_at = started

    def release(self) -> None:
        """Overwrite the lease If-Match with a released tombstone (never a blind delete)."""
        self._stop.set()
        if self._renewer is not threading.current_thread():
            self._renewer.join()
        with self._guard:
            if self.lost or self.released:
                return
            self.released = True
            with contextlib.suppress(PreconditionFailed, FileNotFoundError):  # taken over
                self._storage._put_lease(self._key, self._shown, self._mode, epoch=self.epoch,
                                         owner=self.owner, note=b"", released=True)


class ObjectStorage:
    """``Storage`` on an obstore store; locations are ``PurePosixPath`` values under ``root``.

    ``store`` is already scoped to the lake's prefix; ``url`` is what ``show`` prefixes keys
    with (no credentials in it); ``secrets`` are option values masked in error texts.
    """

    atomic_rename = False
    leases = True
    """Object stores rename nothing in one step: write a table version in place."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        url: str,
        root: PurePosixPath = _TOP,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        part_size: int = DEFAULT_PART_SIZE,
        upload_concurrency: int = DEFAULT_UPLOAD_CONCURRENCY,
        redact: Iterable[str] = (),
        monotonic: Callable[[], float] = time.monotonic,
        table_options: Mapping[str, str] | None = None,
    ) -> None:
        if not root.is_absolute():
            raise ValueError(f"the root location must be absolute, not {root}")
        self.store = store
        self.url = re.sub(r"(?<=[^:/])/+$", "", url)  # s3://b/p/ -> s3://b/p; memory:/// stays
        self.root = root
        self.lease_ttl = lease_ttl
        self.part_size = part_size
        self.upload_concurrency = upload_concurrency
        self.monotonic = monotonic
        self._redact = tuple(value for value in redact if value)
        self._table_options = dict(table_options or {})
        self._copy_if_absent = True  # until the store says it cannot
        self._seen: dict[str, tuple[str, float]] = {}  # lease key -> (ETag, first seen)
        self._seen_guard = threading.Lock()

    def __repr__(self) -> str:
        return f"ObjectStorage({self.url!r})"

    @property
    def storage_classes(self) -> frozenset[str]:
        """S3's instantly readable colder classes, Azure's Cool and Cold; none on GCS (not
        built). The memory store (tests) takes S3's: it keeps the attribute as written."""
        if isinstance(self.store, obstore.store.AzureStore):
            return AZURE_TIERS
        if isinstance(self.store, obstore.store.S3Store | obstore.store.MemoryStore):
            return S3_CLASSES
        return frozenset()

    # -- locations --------------------------------------------------------------------------
    def _key(self, path: PurePath) -> str:
        """The object key of ``path`` ("" for the root); refuses what is not under the root."""
        if ".." in path.parts or "." in path.parts:
            raise LakeStateError(f"{path} is not a plain location under {self.url}")
        try:
            relative = PurePosixPath(path.as_posix()).relative_to(self.root)
        except ValueError:
            raise LakeStateError(f"{path} is outside the lake at {self.url}") from None
        return "" if relative == PurePosixPath(".") else relative.as_posix()

    def _location(self, key: str) -> PurePosixPath:
        return self.root / key

    def show(self, path: PurePath) -> str:
        try:
            key = self._key(path)
        except LakeStateError:
            return f"{self.url} (outside: {path})"
        if not key:
            return self.url
        return f"{self.url}{key}" if self.url.endswith("/") else f"{self.url}/{key}"

    def table_location(self, path: PurePath) -> tuple[str, dict[str, str]]:
        """delta-rs speaks object_store too: the same URL and the same option names (the
        store's and its HTTP client's; credentials it reads from the same environment)."""
        if isinstance(self.store, obstore.store.MemoryStore):
            raise LakeStateError("a memory:// lake lives in this process's obstore only: "
                                 "table formats (Delta) need a real store")
        return self.show(path), dict(self._table_options)

    def _scrub(self, text: str) -> str:
        return _scrub(text, self._redact)

    def _errors(self, path: PurePath) -> contextlib.AbstractContextManager[None]:
        return _mapped(self.show(path), self._scrub)

    def _head(self, key: str, path: PurePath) -> ObjectMeta | None:
        try:
            with self._errors(path):
                return obstore.head(self.store, key)
        except FileNotFoundError:
            return None

    def _has_children(self, key: str, path: PurePath) -> bool:
        with self._errors(path):
            for chunk in obstore.list(self.store, key or None, chunk_size=1):
                if chunk:
                    return True
        return False

    # -- reading ----------------------------------------------------------------------------
    def exists(self, path: PurePath) -> bool:
        """An object under that name, or a "directory" (a prefix with objects under it)."""
        key = self._key(path)
        return (bool(key) and self._head(key, path) is not None) or self._has_children(key, path)

    def is_dir(self, path: PurePath) -> bool:
        return self._has_children(self._key(path), path)

    def read_bytes(self, path: PurePath) -> bytes:
        with self._errors(path):
            return bytes(obstore.get(self.store, self._key(path)).bytes())

    def signature(self, path: PurePath) -> Signature | None:
        meta = self._head(self._key(path), path)
        return None if meta is None else _signature(meta)

    def size(self, path: PurePath) -> int:
        with self._errors(path):
            return obstore.head(self.store, self._key(path))["size"]

    def open_read(self, path: PurePath) -> pa.NativeFile:
        shown = self.show(path)
        with self._errors(path):
            reader = obstore.open_reader(self.store, self._key(path))
        return pa.PythonFile(_Reader(reader, shown, self._scrub), mode="r")

    def list_dir(self, path: PurePath) -> list[Entry]:
        key = self._key(path)
        with self._errors(path):
            listing = obstore.list_with_delimiter(self.store, key or None)
        entries = [Entry(self._location(prefix), True, 0, 0)
                   for prefix in listing["common_prefixes"]]
        entries += [Entry(self._location(meta["path"]), False, meta["size"], _mtime_ns(meta))
                    for meta in listing["objects"]]
        return sorted(entries, key=lambda e: e.name)

    def walk_files(self, path: PurePath) -> Iterator[Entry]:
        key = self._key(path)
        with self._errors(path):
            for chunk in obstore.list(self.store, key or None):
                for meta in chunk:
                    yield Entry(self._location(meta["path"]), False, meta["size"],
                                _mtime_ns(meta))

    def check_inside(self, base: PurePath, candidate: PurePath) -> None:
        """Lexical: object stores have no symlinks, so ``..`` is the only way out."""
        normal_base = PurePosixPath(os.path.normpath(base.as_posix()))
        normal = PurePosixPath(os.path.normpath(candidate.as_posix()))
        if normal != normal_base and normal_base not in normal.parents:
            raise LakeStateError(
                f"{candidate} leads to {normal}, outside {normal_base}; lakeexportd only "
                "touches objects inside a feed's folder (check for a bad name)"
            )

    # -- writing ----------------------------------------------------------------------------
    def publish(
        self, path: PurePath, data: bytes, *, file_mode: int, dir_mode: int | None = None,
        failpoint_prefix: str | None = None, expected: Signature | None | _Anything = ANY,
    ) -> Signature:
        def step(name: str) -> None:
            if failpoint_prefix is not None:
                failpoint(f"{failpoint_prefix}.{name}")

        key = self._key(path)
        mode: PutMode
        if isinstance(expected, _Anything):
            mode = "overwrite"
        elif expected is None:
            mode = "create"
        else:
            mode = _update_mode(expected)
        step("before_tmp_write")
        try:
            with self._errors(path):
                result = obstore.put(self.store, key, data, mode=mode, use_multipart=False)
        except FileExistsError as exc:  # create-if-absent lost
            raise PreconditionFailed(errno.EEXIST, "exists already", self.show(path)) from exc
        except FileNotFoundError as exc:  # If-Match on a deleted object (S3 answers 404)
            if mode == "overwrite":
                raise
            raise PreconditionFailed(errno.ESTALE, "changed since it was read",
                                     self.show(path)) from exc
        step("after_replace")
        step("after_dir_fsync")
        return _signature(result)

    def create(self, path: PurePath, *, file_mode: int) -> Writable:
        key = self._key(path)
        if self._head(key, path) is not None:
            raise FileExistsError(errno.EEXIST, "already exists", self.show(path))
        return self._upload(key, path)

    def _upload(self, key: str, path: PurePath,
                attributes: dict[str, str] | None = None) -> _Upload:
        """A streamed upload to ``key``: one PUT at ``close`` up to ``part_size``, else
        multipart with ``upload_concurrency`` parts in flight."""
        with self._errors(path):
            writer = obstore.open_writer(self.store, key, attributes=attributes,
                                         buffer_size=self.part_size,
                                         max_concurrency=self.upload_concurrency)
        return _Upload(writer, self.show(path), self._scrub)

    def sync_file(self, path: PurePath) -> None:
        """Nothing to do: a completed upload is durable."""

    def rewrite_in_class(self, path: PurePath, storage_class: str, *, size: int) -> None:
        """Same key, same bytes, new class: see "Storage classes" in the module doc."""
        shown = self.show(path)
        if storage_class not in self.storage_classes:
            allowed = ", ".join(sorted(self.storage_classes)) or "none"
            raise OSError(errno.EOPNOTSUPP, f"{storage_class!r} is not a class this store "
                          f"moves objects to (it takes: {allowed})", shown)
        key = self._key(path)
        with self._errors(path):
            meta = obstore.head(self.store, key)
        if meta["size"] != size:
            raise PreconditionFailed(errno.ESTALE, f"holds {meta['size']} bytes, not the "
                                     f"{size} listed; left as it is", shown)
        seen = _signature(meta)
        with self._errors(path):
            got = obstore.get(self.store, key, options={"if_match": str(seen[0])})
            attributes: dict[str, str] = {name: value for name, value in got.attributes.items()
                                          if name != "Storage-Class"}
            attributes["Storage-Class"] = storage_class
            if size <= self.part_size:
                obstore.put(self.store, key, got.bytes(), attributes=attributes,
                            mode=_update_mode(seen), use_multipart=False)
            else:
                self._stream_back(key, path, got, attributes, seen)
        written = self.size(path)
        if written != size:
            raise OSError(errno.EIO, f"rewritten in {storage_class} with {written} bytes "
                          f"instead of {size}: check the object", shown)

    def _stream_back(self, key: str, path: PurePath, got: GetResult, attributes: dict[str, str],
                     seen: Signature) -> None:
        upload = self._upload(key, path, attributes)
        try:
            for chunk in got.stream(min_chunk_size=self.part_size):
                upload.write(chunk)
            if self.signature(path) != seen:
                raise PreconditionFailed(errno.ESTALE, "changed while it was rewritten; the "
                                         "new copy was dropped", self.show(path))
            upload.close()
        except BaseException:
            upload.abort()
            raise

    def _copy_absent(self, source: str, target: str, target_path: PurePath) -> None:
        """Copy ``source`` to ``target`` unless ``target`` exists (``FileExistsError``)."""
        if self._copy_if_absent:
            try:
                with self._errors(target_path):
                    obstore.copy(self.store, source, target, overwrite=False)
                return
            except OSError as exc:
                if exc.errno != errno.EOPNOTSUPP:
                    raise
                self._copy_if_absent = False  # plain S3: check, then copy (documented race)
        if self._head(target, target_path) is not None:
            raise FileExistsError(errno.EEXIST, "already exists", self.show(target_path))
        with self._errors(target_path):
            obstore.copy(self.store, source, target, overwrite=True)

    def promote(self, source: PurePath, target: PurePath) -> None:
        """Server-side copy that never replaces ``target``, then the source is deleted."""
        source_key, target_key = self._key(source), self._key(target)
        if self._head(source_key, source) is None:
            raise FileNotFoundError(errno.ENOENT, "no such object", self.show(source))
        self._copy_absent(source_key, target_key, target)
        with self._errors(source):
            obstore.delete(self.store, source_key)

    def rename_dir(self, source: PurePath, target: PurePath) -> None:
        """Object by object (copy, then delete the sources): not atomic, see the module doc."""
        if self.exists(target):
            raise FileExistsError(errno.EEXIST, "exists", self.show(target))
        moved = [entry.path for entry in self.walk_files(source)]
        if not moved:
            raise FileNotFoundError(errno.ENOENT, "no objects under it", self.show(source))
        for path in moved:
            relative = PurePosixPath(path).relative_to(PurePosixPath(source.as_posix()))
            self._copy_absent(self._key(path), self._key(target / relative), target / relative)
        self._delete_keys([self._key(path) for path in moved], source)

    def sync(self, directories: Iterable[PurePath]) -> None:
        """Nothing to do: names on an object store are durable once written."""

    def make_dirs(self, path: PurePath, dir_mode: int) -> list[PurePath]:
        """Nothing to create: a prefix exists as soon as an object is under it."""
        return []

    def delete(self, path: PurePath) -> bool:
        key = self._key(path)
        if self._head(key, path) is None:
            return False
        with self._errors(path):
            obstore.delete(self.store, key)
        return True

    def remove_dir(self, path: PurePath) -> bool:
        """``True`` when nothing is under the prefix (there is nothing to remove)."""
        return not self._has_children(self._key(path), path)

    def _delete_keys(self, keys: list[str], path: PurePath) -> None:
        for start in range(0, len(keys), 1000):  # S3's DeleteObjects limit per request
            with self._errors(path):
                obstore.delete(self.store, keys[start:start + 1000])

    def delete_tree(self, path: PurePath) -> None:
        key = self._key(path)
        if not key:
            raise LakeStateError(f"refusing to delete the whole lake at {self.url}")
        self._delete_keys([self._key(entry.path) for entry in self.walk_files(path)], path)

    # -- locks ------------------------------------------------------------------------------
    def _put_lease(
        self, key: str, shown: str, mode: PutMode, *, epoch: int, owner: str, note: bytes,
        released: bool = False,
    ) -> PutResult:
        document = {
            "lease": "lakeexportd", "owner": owner, "epoch": epoch, "ttl_s": self.lease_ttl,
            "renewed_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "released": released,
            "note": note.decode("utf-8", "surrogateescape"),
            # S3's ETag is the MD5 of the bytes: every write must differ, or a renewal would
            # look like no renewal and a contender would take a live lease.
            "write": secrets.token_hex(8),
        }
        data = json.dumps(document, indent=1).encode() + b"\n"  # ASCII: surrogates escaped
        with _mapped(shown, self._scrub):
            return obstore.put(self.store, key, data, mode=mode, use_multipart=False)

    def _read_lease(self, key: str, path: PurePath) -> _LeaseState | None:
        try:
            with self._errors(path):
                got = obstore.get(self.store, key)
                data = bytes(got.bytes())
        except FileNotFoundError:
            return None
        meta = got.meta
        if meta["e_tag"] is None:
            _signature(meta)  # raises: no ETag, no leases
        epoch, ttl, released, note, owner = 0, self.lease_ttl, False, b"", "?"
        try:  # an unreadable lease (damaged, foreign) is a held one, taken over after a ttl
            document = json.loads(data)
            epoch = int(document["epoch"])
            ttl = float(document["ttl_s"]) if float(document["ttl_s"]) > 0 else ttl
            released = document.get("released") is True
            note = str(document.get("note", "")).encode("utf-8", "surrogateescape")
            owner = str(document.get("owner", "?"))
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        return _LeaseState(str(meta["e_tag"]), meta["version"], epoch, ttl, released, note,
                           owner)

    def _stale(self, key: str, state: _LeaseState) -> bool:
        """Whether this process has seen ``state``'s ETag unchanged for a whole ttl."""
        now = self.monotonic()
        with self._seen_guard:
            seen = self._seen.get(key)
            if seen is None or seen[0] != state.e_tag:
                self._seen[key] = (state.e_tag, now)
                return False
            return now - seen[1] >= state.ttl

    def try_lock(
        self, path: PurePath, *, file_mode: int, note: bytes = b"", shared: bool = False,
    ) -> Held | None:
        shown = self.show(path)
        if shared:
            raise OSError(errno.EOPNOTSUPP, "object stores have no shared leases", shown)
        key = self._key(path)
        owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        for _ in range(3):  # the lease changed under us between two requests: look again
            started = self.monotonic()
            try:
                result = self._put_lease(key, shown, "create", epoch=1, owner=owner, note=note)
            except FileExistsError:
                pass
            else:
                return _Lease(self, key, shown, result, epoch=1, owner=owner, note=note,
                              written_at=started)
            state = self._read_lease(key, path)
            if state is None:
                continue
            if not state.released and not self._stale(key, state):
                return None
            started = self.monotonic()
            mode = _update_mode((state.e_tag,) if state.version is None
                                else (state.e_tag, state.version))
            try:
                result = self._put_lease(key, shown, mode, epoch=state.epoch + 1, owner=owner,
                                         note=note)
            except PreconditionFailed:
                return None  # renewed or taken by another contender first
            except FileNotFoundError:
                continue
            with self._seen_guard:
                self._seen.pop(key, None)
            return _Lease(self, key, shown, result, epoch=state.epoch + 1, owner=owner,
                          note=note, written_at=started,
                          took_over=None if state.released else state.owner)
        return None

    def lock_note(self, path: PurePath) -> bytes:
        try:
            state = self._read_lease(self._key(path), path)
        except OSError:
            return b""
        return b"" if state is None or state.released else state.note

    def is_locked(self, path: PurePath) -> bool:
        """A lease not released and not seen unchanged for a ttl (first look: locked)."""
        key = self._key(path)
        state = self._read_lease(key, path)
        return state is not None and not state.released and not self._stale(key, state)

    # -- self-test --------------------------------------------------------------------------
    def check_conditional_writes(self, root: PurePath | None = None) -> list[str]:
        """What this store fails to enforce of create-if-absent and If-Match (empty: both).

        Writes, overwrites and deletes one scratch object under the root. Without both
        fences exactly-once cannot hold, so start-up and ``check-store`` refuse such a store.
        Errors other than a missing fence (no access, no network) raise ``OSError``.
        """
        path = self.root / f".lakeexportd-check-{secrets.token_hex(8)}"
        key = self._key(path)
        problems: list[str] = []
        try:
            try:
                with self._errors(path):
                    first = obstore.put(self.store, key, b"1", mode="create")
            except OSError as exc:
                if exc.errno == errno.EOPNOTSUPP:
                    return [f"create-if-absent (If-None-Match) is not supported: {exc.strerror}"]
                raise
            if first["e_tag"] is None:
                return ["the store returns no ETag, so If-Match cannot be used"]
            try:
                with self._errors(path):
                    obstore.put(self.store, key, b"2", mode="create")
                problems.append("create-if-absent is ignored: a second create replaced the "
                                "object")
            except FileExistsError:
                pass
            current = self.signature(path)
            if current is None:
                return [*problems, "an object just written cannot be found (HEAD)"]
            try:
                with self._errors(path):
                    second = obstore.put(self.store, key, b"3", mode=_update_mode(current))
            except OSError as exc:
                what = "not supported" if exc.errno == errno.EOPNOTSUPP else "refused"
                problems.append(f"If-Match with the current ETag is {what}: {exc.strerror}")
                return problems
            if _signature(second) == current:
                problems.append("the ETag did not change when the object was replaced")
            try:
                with self._errors(path):
                    obstore.put(self.store, key, b"4", mode=_update_mode(current))
                problems.append("If-Match is ignored: a write with a stale ETag replaced the "
                                "object")
            except PreconditionFailed:
                pass
            return problems
        finally:
            with contextlib.suppress(OSError), self._errors(path):
                obstore.delete(self.store, key)


# -- URLs ------------------------------------------------------------------------------------
SCHEMES = frozenset({"s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl", "memory"})
"""URL schemes ``from_url`` opens (``file://`` and plain paths are the local store's)."""

_CLIENT_OPTIONS = frozenset({
    "allow_http", "allow_invalid_certificates", "connect_timeout", "default_content_type",
    "pool_idle_timeout", "pool_max_idle_per_host", "proxy_url", "proxy_ca_certificate",
    "proxy_excludes", "root_certificate", "randomize_addresses", "read_timeout", "timeout",
    "user_agent",
})
"""obstore's HTTP client options (they go apart from the store's own; mixed in, obstore
panics)."""

_RETRY_OPTIONS = frozenset({"max_retries", "retry_timeout"})
_STORE_PREFIXES = ("aws_", "azure_storage_", "azure_", "google_")
_SECRET_WORDS = ("secret", "key", "token", "password", "sas", "credential", "signature")


def _option_name(key: str) -> str:
    name = key.strip().lower()
    for prefix in _STORE_PREFIXES:
        if name.startswith(prefix) and name[len(prefix):] in _CLIENT_OPTIONS | _RETRY_OPTIONS:
            return name[len(prefix):]
    return name


def _split_options(
    options: Mapping[str, str],
) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """(store config, HTTP client options, retry config) from one flat mapping."""
    config: dict[str, str] = {}
    client: dict[str, str] = {}
    retry: dict[str, Any] = {}
    for key, value in options.items():
        name = _option_name(key)
        if name in _CLIENT_OPTIONS:
            client[name] = str(value)
        elif name == "max_retries":
            retry[name] = _number(key, value, int)
        elif name == "retry_timeout":
            retry[name] = timedelta(seconds=_number(key, value, float))
        else:
            config[key] = str(value)
    return config, client, retry


def _number(key: str, value: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(str(value).removesuffix("s"))
    except ValueError:
        raise ConfigError(f"store option {key!r} must be a number, not {value!r}") from None


def from_url(
    url: str,
    options: Mapping[str, str] | None = None,
    *,
    lease_ttl: float = DEFAULT_LEASE_TTL,
    part_size: int = DEFAULT_PART_SIZE,
    upload_concurrency: int = DEFAULT_UPLOAD_CONCURRENCY,
) -> ObjectStorage:
    """The object store at ``url`` (``s3://bucket/prefix``, ``az://container/prefix``, ...).

    ``options`` are named as obstore (object_store) names them: the store's own (``region``,
    ``endpoint``, ``account_name``, ``use_emulator``, ``conditional_put``,
    ``copy_if_not_exists``, ...), its HTTP client's (``allow_http``, ``timeout``, ...) and
    ``max_retries`` / ``retry_timeout`` (seconds). Credentials come from the environment and
    the clouds' standard chains, which obstore reads itself. ``memory://`` is a new empty
    in-memory store (tests). Bad URLs and options raise ``ConfigError``; neither the URL's
    query nor any option value is ever echoed.
    """
    options = dict(options or {})
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"lake root scheme {scheme!r}:// is not an object store this "
                          f"build opens (one of: {', '.join(sorted(SCHEMES))})")
    if parts.password is not None or parts.query or parts.fragment:
        raise ConfigError(f"the lake root {scheme}://{parts.hostname or ''}/... must not carry "
                          "credentials or a query: give store options in lake.storage and "
                          "credentials through the environment")
    prefix = [p for p in parts.path.split("/") if p]
    if any(p in (".", "..") for p in prefix):
        raise ConfigError(f"the lake root {scheme}://{parts.netloc}/... has '.' or '..' in it")
    if scheme != "memory" and not parts.netloc:
        raise ConfigError(f"the lake root {scheme}://... names no bucket or container")
    shown = f"{scheme}://{parts.netloc}" + ("".join(f"/{p}" for p in prefix) or "/")
    root = PurePosixPath("/", *([parts.netloc] if parts.netloc else []), *prefix)
    secret_values = [str(v) for k, v in options.items()
                     if any(word in k.lower() for word in _SECRET_WORDS)]
    secret_values += [v for k, v in os.environ.items()  # the chains obstore reads itself
                      if k.startswith(("AWS_", "AZURE_", "GOOGLE_"))
                      and any(word in k.lower() for word in _SECRET_WORDS)]
    store: ObjectStore
    if scheme == "memory":
        if options:
            raise ConfigError(f"memory:// takes no store options (got {sorted(options)})")
        store = obstore.store.MemoryStore()
    else:
        config, client, retry = _split_options(options)
        build: Any = obstore.store.from_url  # its overloads want one TypedDict per cloud
        try:
            store = build(shown, config=config or None, client_options=client or None,
                          retry_config=retry or None)
        except obx.UnknownConfigurationKeyError as exc:
            raise ConfigError(f"{_scrub(str(exc), secret_values)} (lake root {shown})") from None
        except (obx.BaseError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot open the lake root {shown}: "
                              f"{_scrub(str(exc), secret_values)}") from None
        except BaseException as exc:  # a Rust panic (pyo3_runtime.PanicException) on bad input
            if type(exc).__name__ != "PanicException":
                raise
            raise ConfigError(f"cannot open the lake root {shown}: obstore refused the store "
                              f"options {sorted(options)}") from None
    table_options = {}
    if scheme != "memory":
        config, client, _ = _split_options(options)
        table_options = {**config, **client}
    return ObjectStorage(store, url=shown, root=root, lease_ttl=lease_ttl, part_size=part_size,
                         upload_concurrency=upload_concurrency, redact=secret_values,
                         table_options=table_options)
