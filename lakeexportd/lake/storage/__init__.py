"""Where the lake's bytes live: the ``Storage`` interface and its implementations.

Owns every file-system call of the lake (data files, ``_metadata.json``, the feed registry,
locks, cleanup, reports read through it). May import ``lakeexportd.errors`` and
``lakeexportd.failpoints`` only. Today there is one implementation, ``LocalStorage``;
``open_storage`` is the one place that chooses one for a lake root.
"""

from __future__ import annotations

from pathlib import PurePath

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

__all__ = ["ANY", "LOCAL", "Entry", "Held", "LocalStorage", "PreconditionFailed", "Signature",
           "Storage", "Writable", "open_storage"]

LOCAL = LocalStorage()
"""The local file system (stateless, so one instance serves every lake on disk)."""


def open_storage(root: PurePath) -> Storage:
    """The storage holding the lake at ``root``."""
    return LOCAL
