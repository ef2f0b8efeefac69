"""The daemon's daily tiering run of one feed: tier, then one log line and the metrics.

``Tierer.tier`` (``lake/tiering.py``) does the work under the feed's lock, batch by batch, so
it never runs at the same time as the feed's export; this module turns its result or its
exception into exactly one ``tier.finished`` or ``tier.failed`` event and the tiering
metrics, and never raises an ``Exception`` into the scheduler.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

import structlog

from lakeexportd.config.model import Feed
from lakeexportd.errors import LakeExportError
from lakeexportd.lake import layout
from lakeexportd.lake.tiering import Tierer, shown_bytes_per_tier
from lakeexportd.service.metrics import Metrics, Result
from lakeexportd.service.runs import _LEVELS, classify

log = structlog.get_logger(__name__)

TIER_EVERY = 86_400.0
"""The daemon tiers each feed with ``tiering`` once a day."""
TIER_FIRST_DELAY = 60.0
"""... the first time this many seconds after the feed is scheduled (its export goes first)."""

def run_tiering(
    tierer: Tierer, feed: Feed, now: dt.datetime, *, cancel: threading.Event, metrics: Metrics,
    monotonic: Callable[[], float] = time.monotonic,
) -> Result | None:
    """Tier ``feed`` as of ``now``; log and count it. None: the feed has no ``tiering``."""
    tiering = feed.tiering
    if tiering is None or feed.kind != "stream":
        return None
    started = monotonic()
    dir_mode, file_mode = layout.modes(feed.security)
    with structlog.contextvars.bound_contextvars(feed=feed.name):
        try:
            result = tierer.tier(feed.name, tiering.storage_class,
                                 after_days=tiering.after_days, timezone=feed.timezone, now=now,
                                 dir_mode=dir_mode, file_mode=file_mode, cancel=cancel)
        except Exception as exc:
            outcome = classify(exc)
            metrics.observe_tier_run(feed.name, outcome)
            log.log(_LEVELS[outcome], "tier.failed", feed=feed.name, result=outcome,
                    storage_class=tiering.storage_class, error=str(exc),
                    error_type=type(exc).__name__, duration_s=round(monotonic() - started, 3),
                    exc_info=not isinstance(exc, LakeExportError))
            return outcome
        outcome = "aborted" if result.stopped else "success"
        metrics.observe_tier_run(feed.name, outcome)
        per_tier = shown_bytes_per_tier(result.bytes_per_tier)
        metrics.set_tier_bytes(feed.name, per_tier)
        log.info("tier.finished", feed=feed.name, result=outcome,
                 storage_class=tiering.storage_class,
                 partitions=len({m.partition for m in result.moves}), files=result.files,
                 bytes=result.size_bytes, duration_s=round(monotonic() - started, 3),
                 bytes_per_tier=per_tier)
        return outcome
