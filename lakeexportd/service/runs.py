"""One scheduled run of one feed, as the daemon sees it: export, then one log line and metrics.

The exporter says what happened by returning an ``ExportResult`` or raising; this module turns
that into the run's result label (``success | failed | transient | skipped | aborted``), exactly
one ``export.finished`` or ``export.failed`` event, and the metrics. It also reads a feed's
``_metadata.json`` at start-up, so lag and last success are right before the first run.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from lakeexportd.config.model import Feed
from lakeexportd.errors import (
    ExportAborted,
    FeedLocked,
    LakeExportError,
    RejectedValueError,
    TransientError,
    unreachable_cause,
)
from lakeexportd.export.exporter import ExportResult, Progress, new_run_id
from lakeexportd.lake import layout
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import StreamMetadata, TableMetadata, current_file_count
from lakeexportd.lake.storage import Storage, open_storage
from lakeexportd.lake.tiering import shown_bytes_per_tier
from lakeexportd.service.metrics import Metrics, Result

log = structlog.get_logger(__name__)


class Exporter(Protocol):
    """What the daemon needs of ``DataLakeExporter`` (tests pass a fake with real state)."""

    def export(
        self,
        feed: Feed,
        now: dt.datetime,
        *,
        cancel: threading.Event | None = None,
        progress: Progress | None = None,
        run_id: str | None = None,
    ) -> ExportResult: ...


def classify(exc: BaseException) -> Result:
    """The ``result`` label of a run that raised ``exc``."""
    if isinstance(exc, FeedLocked):
        return "skipped"
    if isinstance(exc, ExportAborted):
        return "aborted"
    if isinstance(exc, TransientError) or unreachable_cause(exc) is not None:
        return "transient"
    return "failed"


REJECTED_HOLD_S = 3600.0


class Holds:
    """Feeds whose last run failed on a rejected value (``RejectedValueError``).

    The next run would read the same row and fail the same way, so the daemon does not start
    one on every tick: a held feed is skipped until its definition changes (a reload or the
    CLI gives it a different ``Feed``) or ``hold_s`` passes (the source may have been fixed in
    ksqlDB, which the daemon cannot see without trying).
    """

    def __init__(
        self, hold_s: float = REJECTED_HOLD_S, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.hold_s = hold_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._held: dict[str, tuple[Feed, float]] = {}

    def hold(self, feed: Feed) -> None:
        with self._lock:
            self._held[feed.name] = (feed, self._monotonic() + self.hold_s)

    def remaining(self, feed: Feed) -> float | None:
        """Seconds ``feed`` stays held, or None (a changed definition ends the hold)."""
        with self._lock:
            held = self._held.get(feed.name)
            if held is None:
                return None
            left = held[1] - self._monotonic()
            if held[0] != feed or left <= 0:
                del self._held[feed.name]
                return None
            return left


def run_export(
    exporter: Exporter,
    feed: Feed,
    now: dt.datetime,
    *,
    cancel: threading.Event,
    metrics: Metrics,
    wall_clock: Callable[[], float],
    monotonic: Callable[[], float] = time.monotonic,
    holds: Holds | None = None,
) -> Result | None:
    """Export ``feed`` as of ``now``; log and count the run; never raise an ``Exception``.

    None: no run, because ``holds`` holds the feed.
    """
    if holds is not None and holds.remaining(feed) is not None:
        log.debug("feed.held", feed=feed.name, reason="the last run rejected a value")
        return None
    run_id = new_run_id(now)
    started = monotonic()
    with structlog.contextvars.bound_contextvars(feed=feed.name, run_id=run_id), \
            metrics.feed_context(feed.name):
        try:
            result = exporter.export(feed, now, cancel=cancel, run_id=run_id)
        except Exception as exc:
            outcome = classify(exc)
            duration = monotonic() - started
            metrics.observe_run(feed.name, outcome, duration_s=duration)
            details: dict[str, object] = {}
            if isinstance(exc, RejectedValueError):
                metrics.rejected_value(feed.name, exc.column)
                if holds is not None:
                    holds.hold(feed)
                    details["held_s"] = holds.hold_s
                    details["hint"] = ("runs resume when the feed's definition changes "
                                       "(reload) or the hold ends")
            # Skips and aborts are expected in normal operation; other failures need a look,
            # and a bug (not a LakeExportError) needs its traceback.
            log.log(
                _LEVELS[outcome], "export.failed", feed=feed.name, run_id=run_id,
                result=outcome, rows=0, files=0, bytes=0,
                duration_s=round(duration, 3), error=str(exc), error_type=type(exc).__name__,
                exc_info=not isinstance(exc, LakeExportError), **details,
            )
            return outcome
        duration = monotonic() - started
        metrics.observe_run(
            feed.name, "success", duration_s=duration, rows=result.rows,
            bytes_written=result.bytes,
        )
        metrics.set_progress(
            feed.name, last_success=wall_clock(), lag_origin=lag_origin(result),
            table_versions=result.versions_kept, listed_files=result.listed_files,
            listed_bytes=result.listed_bytes, delta_version=result.delta_version,
        )
        if result.catalogued:
            metrics.observe_catalog(feed.name, behind=result.catalog_behind is not None)
        details = (
            {"watermark_ms": result.watermark_ms} if result.kind == "stream"
            else {"version": result.version, "versions_kept": result.versions_kept}
        )
        log.info(
            "export.finished", feed=feed.name, run_id=run_id, result="success",
            rows=result.rows,
            files=result.files, bytes=result.bytes, duration_s=round(duration, 3),
            orphans_removed=result.orphans_removed, **details,
        )
        return "success"


_LEVELS: dict[Result, int] = {
    "skipped": logging.INFO, "aborted": logging.INFO, "transient": logging.WARNING,
    "failed": logging.ERROR, "success": logging.INFO,
}


def lag_origin(result: ExportResult) -> float | None:
    """Epoch seconds lag counts from: the stream's watermark, or the table's scan start."""
    origin_ms = result.watermark_ms if result.kind == "stream" else result.scan_started_ms
    return None if origin_ms is None else origin_ms / 1000


def seed_from_metadata(metrics: Metrics, feed: Feed, root: Path,
                       storage: Storage | None = None) -> None:
    """Set last success, lag and versions from the feed's ``_metadata.json``, if it has one."""
    feed_dir = layout.feed_dir(root, feed.kind, feed.name)
    try:
        doc = MetadataStore(storage or open_storage(root)).load(feed_dir)
    except LakeExportError as exc:
        log.warning("feed.metadata_unreadable", feed=feed.name, error=str(exc))
        return
    if doc is None:
        return
    successes = [e for e in doc.exports if e.status == "success"]
    last_success = _epoch(successes[-1].finished) if successes else None
    origin: float | None = None
    versions: int | None = None
    if isinstance(doc, StreamMetadata):
        origin = None if doc.watermark_ms is None else doc.watermark_ms / 1000
    elif isinstance(doc, TableMetadata):
        versions = len(doc.versions)
        current = doc.current
        origin = _epoch(current.created) if current is not None else None
    delta_version = doc.extra.get("delta_version")
    metrics.set_progress(
        feed.name, last_success=last_success, lag_origin=origin, table_versions=versions,
        listed_files=current_file_count(doc), listed_bytes=doc.total_size_bytes,
        delta_version=delta_version if isinstance(delta_version, int) else None,
    )
    if isinstance(doc, StreamMetadata) and feed.tiering is not None:
        metrics.set_tier_bytes(feed.name, shown_bytes_per_tier(doc.bytes_per_tier()))


def _epoch(text: str) -> float | None:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
