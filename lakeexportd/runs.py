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

from lakeexportd import layout
from lakeexportd.config import Feed
from lakeexportd.errors import (
    ExportAborted,
    FeedLocked,
    LakeExportError,
    TransientError,
)
from lakeexportd.exporter import ExportResult, Progress, new_run_id
from lakeexportd.metadata import MetadataStore
from lakeexportd.metadata_model import StreamMetadata, TableMetadata
from lakeexportd.metrics import Metrics, Result

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
    if isinstance(exc, TransientError):
        return "transient"
    return "failed"


def run_export(
    exporter: Exporter,
    feed: Feed,
    now: dt.datetime,
    *,
    cancel: threading.Event,
    metrics: Metrics,
    wall_clock: Callable[[], float],
    monotonic: Callable[[], float] = time.monotonic,
) -> Result:
    """Export ``feed`` as of ``now``; log and count the run; never raise an ``Exception``."""
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
            # Skips and aborts are expected in normal operation; other failures need a look,
            # and a bug (not a LakeExportError) needs its traceback.
            log.log(
                _LEVELS[outcome], "export.failed", feed=feed.name, run_id=run_id,
                result=outcome, rows=0, files=0, bytes=0,
                duration_s=round(duration, 3), error=str(exc), error_type=type(exc).__name__,
                exc_info=not isinstance(exc, LakeExportError),
            )
            return outcome
        duration = monotonic() - started
        metrics.observe_run(
            feed.name, "success", duration_s=duration, rows=result.rows,
            bytes_written=result.bytes,
        )
        metrics.set_progress(
            feed.name, last_success=wall_clock(), lag_origin=lag_origin(result),
            table_versions=result.versions_kept,
        )
        details: dict[str, object] = (
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


def seed_from_metadata(metrics: Metrics, feed: Feed, root: Path) -> None:
    """Set last success, lag and versions from the feed's ``_metadata.json``, if it has one."""
    feed_dir = layout.feed_dir(root, feed.kind, feed.name)
    try:
        doc = MetadataStore().load(feed_dir)
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
    metrics.set_progress(
        feed.name, last_success=last_success, lag_origin=origin, table_versions=versions
    )


def _epoch(text: str) -> float | None:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
