"""The daemon's daily compaction run of one stream feed: compact, then one log line and the
metrics.

``lake.compaction.compact_feed`` does the work under the feed's lock, one day at a time, so it
never runs at the same time as the feed's export; this module turns its result or its
exception into exactly one ``compact.finished`` or ``compact.failed`` event and the
compaction metrics, and never raises an ``Exception`` into the scheduler.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from lakeexportd.catalog.policy import follow_catalog
from lakeexportd.config.model import Feed
from lakeexportd.errors import LakeExportError
from lakeexportd.lake.compaction import compact_feed
from lakeexportd.lake.storage import Storage
from lakeexportd.service.metrics import Metrics, Result
from lakeexportd.service.runs import _LEVELS, classify

if TYPE_CHECKING:
    from lakeexportd.catalog.iceberg import LakeCatalog

log = structlog.get_logger(__name__)

COMPACT_EVERY = 86_400.0
"""The daemon compacts each stream feed with ``compaction`` once a day."""
COMPACT_FIRST_DELAY = 120.0
"""... the first time this many seconds after the feed is scheduled (its export goes first,
then tiering: a compacted day is rewritten in the default class, so tiering moves it later)."""


def run_compaction(
    storage: Storage, root: Path, feed: Feed, now: dt.datetime, *, lock_wait: float,
    orphan_grace: float, cancel: threading.Event, metrics: Metrics,
    monotonic: Callable[[], float] = time.monotonic, catalog: LakeCatalog | None = None,
) -> Result | None:
    """Compact ``feed`` as of ``now``; log and count it. None: nothing to compact by config.
    With a ``catalog``, it follows each day's swap (``LakeCatalog.follow``)."""
    if feed.compaction is None or feed.kind != "stream":
        return None
    started = monotonic()
    with structlog.contextvars.bound_contextvars(feed=feed.name):
        try:
            result = compact_feed(storage, root, feed, now=now, lock_wait=lock_wait,
                                  orphan_grace=orphan_grace, cancel=cancel,
                                  follow=follow_catalog(catalog, feed))
        except Exception as exc:
            outcome = classify(exc)
            metrics.observe_compaction_run(feed.name, outcome, files=0)
            log.log(_LEVELS[outcome], "compact.failed", feed=feed.name, result=outcome,
                    error=str(exc), error_type=type(exc).__name__,
                    duration_s=round(monotonic() - started, 3),
                    exc_info=not isinstance(exc, LakeExportError))
            return outcome
        outcome = "aborted" if result.stopped else "success"
        metrics.observe_compaction_run(feed.name, outcome, files=result.files_in)
        log.info("compact.finished", feed=feed.name, result=outcome, days=len(result.days),
                 files_in=result.files_in, files_out=result.files_out,
                 bytes_in=result.bytes_in, bytes_out=result.bytes_out,
                 tiered_days_skipped=len(result.tiered), retired_deleted=result.expired,
                 duration_s=round(monotonic() - started, 3))
        return outcome
