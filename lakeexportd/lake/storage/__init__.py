"""Where the lake's bytes live: the ``Storage`` interface and its implementations.

Owns every file-system and object-store call of the lake (data files, ``_metadata.json``, the
feed registry, locks, cleanup, reports read through it). May import ``lakeexportd.errors`` and
``lakeexportd.failpoints`` only. ``LocalStorage`` keeps a lake on a (mounted) file system,
``ObjectStorage`` on S3, Azure Blob or GCS through obstore; ``open_lake`` / ``open_storage``
are the one place that chooses one for a lake root.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from urllib.parse import unquote, urlsplit

from lakeexportd.errors import ConfigError, StoreUnreachable, unreachable_cause
from lakeexportd.lake.storage.base import (
    ANY,
    Entry,
    Held,
    PreconditionFailed,
    Signature,
    Storage,
    Writable,
)
from lakeexportd.lake.storage.local import LocalStorage
from lakeexportd.lake.storage.object import SCHEMES, ObjectStorage, from_url

__all__ = ["ANY", "LOCAL", "Entry", "Held", "Lake", "LocalStorage", "ObjectStorage",
           "PreconditionFailed", "Signature", "Storage", "StoreUnreachable", "Writable",
           "open_lake", "open_storage", "unreachable_cause"]

LOCAL = LocalStorage()
"""The local file system (stateless, so one instance serves every lake on disk)."""


@dataclass(frozen=True)
class Lake:
    """A lake's storage and the location of its root in that storage's terms.

    On disk the root is the absolute path; on an object store it is a ``PurePosixPath``
    that reads like the URL (``/bucket/prefix``), which only that storage understands.
    """

    storage: Storage
    root: PurePath


def open_lake(root: str | PurePath, options: Mapping[str, str] | None = None, *,
              lease_ttl: float | None = None) -> Lake:
    """The storage holding the lake at ``root`` (a path, ``file://``, or an object-store URL).

    ``options`` are the store's options (``lake.storage``: endpoint, region, allow_http, ...);
    a local root takes none. Raises ``ConfigError`` for an unknown scheme or a bad option.
    """
    if isinstance(root, PurePath):  # callers that always had a path: as before
        if options:
            raise ConfigError(f"store options {sorted(options)} apply to object stores only; "
                              "the lake root is a local path")
        return Lake(LOCAL, root)
    parts = urlsplit(root)
    scheme = parts.scheme.lower()
    if len(scheme) <= 1:  # a plain path (or a Windows drive letter)
        local = root
    elif scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"file:// lake roots must be local, not on {parts.netloc!r}")
        local = unquote(parts.path)
    elif scheme in SCHEMES:
        storage = (from_url(root, options) if lease_ttl is None
                   else from_url(root, options, lease_ttl=lease_ttl))
        return Lake(storage, storage.root)
    else:
        raise ConfigError(
            f"lake root scheme {scheme!r}:// is not supported: use a path, file://, or "
            f"one of {', '.join(s + '://' for s in sorted(SCHEMES))}"
        )
    if options:
        raise ConfigError(f"store options {sorted(options)} apply to object stores only; "
                          "the lake root is a local path")
    return Lake(LOCAL, Path(local).absolute())


def open_storage(root: str | PurePath, options: Mapping[str, str] | None = None) -> Storage:
    """The storage holding the lake at ``root`` (see ``open_lake``, which gives its root too)."""
    return open_lake(root, options).storage
