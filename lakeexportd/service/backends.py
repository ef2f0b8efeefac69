"""What runs an export: an exporter and the ksqlDB client it owns, shared by every feed's runs.

A reload that changes the ``ksqldb`` section, the lake, the ``catalog`` or the lock wait builds
a new ``Backend`` for later runs and retires the old one, which closes its client (and its
catalog) once the runs that started with it have ended (a running export is never cut off by a
reload).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from lakeexportd.config.model import Config
from lakeexportd.ksqldb.retry import RequestObserver
from lakeexportd.service import runs

ExporterFactory = Callable[[Config, RequestObserver], tuple[runs.Exporter, Callable[[], None]]]


def build_exporter(
    config: Config, observer: RequestObserver
) -> tuple[runs.Exporter, Callable[[], None]]:
    """The real exporter for ``config`` and the function that closes its ksqlDB client."""
    from lakeexportd.export.exporter import exporter_from_config

    exporter = exporter_from_config(config, observer=observer)
    catalog = exporter.catalog

    def close() -> None:
        exporter.client.close()
        if catalog is not None:
            catalog.close()  # its SQL engine's pooled connections
    return exporter, close


def backend_key(config: Config) -> tuple[object, ...]:
    """What the exporter is built from: a reload that changes any of it builds a new one (a
    changed ``catalog:`` too, or runs would go on syncing to the old catalog)."""
    return (config.ksqldb, config.lake, config.catalog, config.scheduler.lock_wait)


@dataclass
class Backend:
    """An exporter and its client; closed once retired and no run uses it."""

    exporter: runs.Exporter
    close: Callable[[], None]
    users: int = 0
    retired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self) -> None:
        with self.lock:
            self.users += 1

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            done = self.retired and self.users == 0
        if done:
            self.close()

    def retire(self) -> None:
        with self.lock:
            self.retired = True
            done = self.users == 0
        if done:
            self.close()
