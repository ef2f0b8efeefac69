"""The configured lake, opened in one place: ``lake_of(config.lake)`` gives its storage and root.

A local lake is its folder on the local file system. An object-store lake is opened from its
URL and ``lake.storage`` options (secrets already read from ``*_env``/``*_file`` by the config
loader). Its root is still a ``Path``, so the layout's path arithmetic stays one code:
``/bucket/prefix/streams/tx/...``. Nothing touches that path on local disk, because every
read and write goes through the storage (a test pins that ``export/``, ``feeds/`` and
``audit/`` make no file-system call). One ``ObjectStorage`` is kept per configured lake, so
a daemon's lease observations and connections are shared by every run.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lakeexportd.config.model import LakeSettings
from lakeexportd.errors import ConfigError, StoreUnavailable
from lakeexportd.lake.storage import LOCAL, ObjectStorage, Storage, open_lake


@dataclass(frozen=True)
class ConfiguredLake:
    storage: Storage
    root: Path
    where: str  # the folder or URL as configured, for messages


OBJECT_CHECKS = (
    "create-if-absent (If-None-Match: *): a second create is refused",
    "If-Match: a replace with the ETag read succeeds and changes the ETag",
    "If-Match: a replace with a stale ETag is refused",
)
LOCAL_CHECKS = (
    "writable: a file is published (temp, fsync, rename) and removed",
    "create-if-absent: a second create is refused",
    "replace only the version read (compare, then rename)",
    "flock: a second holder of a lock is refused",
)
"""What ``check_store`` proves, in the words ``lakeexportd check-store`` prints."""


@contextlib.contextmanager
def _reaching(lake: ConfiguredLake) -> Iterator[None]:
    """Refused credentials are a configuration error (78); anything else is unavailable (75)."""
    try:
        yield
    except PermissionError as exc:
        raise ConfigError(f"the lake store {lake.where} refused lakeexportd's credentials "
                          f"({exc.strerror}): check lake.storage and the *_env/*_file "
                          "secrets it names") from exc
    except OSError as exc:
        raise StoreUnavailable(f"the lake store {lake.where} cannot be reached "
                               f"({exc.strerror or exc}): check lake.storage.endpoint and "
                               "the network") from exc


def check_store(lake: ConfiguredLake) -> tuple[str, ...]:
    """Refuse a store without create-if-absent and If-Match: exactly-once stands on them.

    ``ConfigError`` (exit 78) names the store and what it lacks, or the refused credentials;
    ``StoreUnavailable`` (exit 75, retried by systemd) when it cannot be reached at all.
    Writes and removes one scratch object under the lake's root. Returns what was checked.
    """
    with _reaching(lake):
        problems = lake.storage.check_conditional_writes(lake.root)
    if problems:
        raise ConfigError(
            f"the lake store {lake.where} cannot hold exactly-once: {'; '.join(problems)}. "
            "lakeexportd needs conditional writes (create-if-absent and If-Match): use a store "
            "or an S3-compatible server that enforces them"
        )
    return OBJECT_CHECKS if isinstance(lake.storage, ObjectStorage) else LOCAL_CHECKS


def check_streaming_write(lake: ConfiguredLake) -> str:
    """Write a scratch file the way the sinks write data (``Storage.create``, streamed), read
    its size back and remove it; what was checked. On an object store it is one byte more
    than a part, so the upload is multipart (an S3 policy may allow PutObject but not the
    multipart calls). Errors as ``check_store``'s; a short or missing file is a ConfigError.
    """
    storage = lake.storage
    if isinstance(storage, ObjectStorage):
        size = storage.part_size + 1
        what = f"multipart upload: 2 parts ({storage.part_size} + 1 bytes)"
    else:
        size = 64 * 1024 + 1
        what = f"streamed write: {size} bytes"
    path = lake.root / f".lakeexportd-check-{secrets.token_hex(8)}.bin"
    chunk = b"\0" * (1024 * 1024)
    with _reaching(lake):
        try:
            writer = storage.create(path, file_mode=0o600)
            left = size
            while left:
                left -= writer.write(chunk[:min(left, len(chunk))])
            writer.close()
            written = storage.size(path)
        finally:
            with contextlib.suppress(OSError):
                storage.delete(path)
    if written != size:
        raise ConfigError(f"the lake store {lake.where} kept {written} of the {size} bytes "
                          "streamed to it: check the store or the S3-compatible server")
    return what


@functools.cache
def lake_of(settings: LakeSettings) -> ConfiguredLake:
    """The storage and root of the configured lake (``ConfigError`` for bad store options)."""
    if settings.url is None:
        assert settings.root is not None  # the config loader gives one or the other
        return ConfiguredLake(LOCAL, settings.root, settings.where)
    try:  # offline: builds the client, sends nothing
        lake = open_lake(settings.url, dict(settings.storage), lease_ttl=settings.lease_ttl)
    except ConfigError as exc:  # an option obstore does not know or refuses (never its value)
        where = f"{settings.origin}.storage: " if settings.origin else ""
        raise ConfigError(f"{where}{exc}: name each option as obstore does (see the README, "
                          "Lakes on object stores)") from None
    return ConfiguredLake(lake.storage, Path(lake.root), settings.where)
