"""The daemon's realtime feeds: one thread per feed, holding its lock and its push query.

APScheduler runs batch feeds; a ``mode: realtime`` feed gets a thread here instead
(``RealtimeJobs.start``), which loops: take the feed's lock (a lease on object stores), run
``RealtimeFeed`` until told to stop, and when the lock is held elsewhere (a second daemon on
the same lake, a CLI run) wait and try again: so a standby daemon takes a realtime feed over
once its holder's lease runs out (DESIGN 11). ``stop`` (SIGTERM, or a reload that changes or
removes the feed) sets the feed's event: the runner sends ``/close-query``, commits what it
wrote and returns, and the thread releases the lock.

Metrics, computed when scraped: ``lakeexportd_realtime_lag_seconds{feed}`` (now minus the
newest ROWTIME committed), ``lakeexportd_realtime_query{feed,state}`` (1 for the current
state), and counters of commits, rows and reconnections. ``/status`` shows each query.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lakeexportd.catalog.policy import in_catalog
from lakeexportd.config.model import Feed
from lakeexportd.errors import FeedLocked, LakeExportError
from lakeexportd.export.realtime import RealtimeFeed
from lakeexportd.lake.metadata_model import (
    FeedMetadata,
    StreamMetadata,
    current_file_count,
    parse_iso,
)
from lakeexportd.service.metrics import Metrics

log = structlog.get_logger(__name__)

STATES = ("starting", "running", "reconnecting", "failed", "standby", "stopped")
LOCKED_RETRY_S = 5.0  # a feed held elsewhere: how often its lock is tried again
FAILED_RETRY_S = 30.0  # a runner that raised (lease lost, store down): the next try


@dataclass
class _Job:
    feed: Feed
    stop: threading.Event
    thread: threading.Thread | None = None
    runner: RealtimeFeed | None = None
    state: str = "starting"
    error: str | None = None
    commits: int = 0  # totals across runners (a lease lost and taken again)
    rows: int = 0
    reconnects: int = 0
    newest_rowtime_ms: int | None = None
    counted: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


Backend = Callable[[], Any]
"""Returns the daemon's current backend (``service.backends.Backend``) or None."""


class RealtimeJobs:
    """The realtime feeds' threads of one daemon."""

    def __init__(self, backend: Backend, *, clock: Callable[[], dt.datetime],
                 metrics: Metrics, lock_wait: Callable[[], float]) -> None:
        self._backend = backend
        self._clock = clock
        self._metrics = metrics
        self._lock_wait = lock_wait
        self._jobs: dict[str, _Job] = {}
        self._guard = threading.Lock()
        metrics.registry.register(_Collector(self))

    def names(self) -> list[str]:
        with self._guard:
            return sorted(self._jobs)

    def start(self, feed: Feed) -> None:
        """Start ``feed``'s thread (stopping a thread of an older definition first)."""
        self.stop(feed.name)
        job = _Job(feed, threading.Event())
        job.thread = threading.Thread(target=self._loop, args=(job,), daemon=True,
                                      name=f"realtime {feed.name}")
        with self._guard:
            self._jobs[feed.name] = job
        job.thread.start()
        log.info("realtime.scheduled", feed=feed.name, source=feed.source,
                 rotate=str(feed.rotate), format=feed.format)

    def stop(self, name: str, *, wait: float | None = 60.0) -> bool:
        """Stop ``name``'s thread: its query closed, what it wrote committed. False if it
        did not end within ``wait`` seconds."""
        with self._guard:
            job = self._jobs.pop(name, None)
        if job is None:
            return True
        job.stop.set()
        if job.thread is not None:
            job.thread.join(wait)
            if job.thread.is_alive():
                log.warning("realtime.stop_slow", feed=name, waited_s=wait)
                return False
        return True

    def stop_all(self, wait: float) -> bool:
        """Stop every thread at once; wait up to ``wait`` seconds for them all."""
        with self._guard:
            jobs, self._jobs = list(self._jobs.values()), {}
        for job in jobs:
            job.stop.set()
        deadline = time.monotonic() + wait
        for job in jobs:
            if job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))
        slow = [j.feed.name for j in jobs if j.thread is not None and j.thread.is_alive()]
        if slow:
            log.warning("realtime.stop_slow", feeds=slow, waited_s=wait)
        return not slow

    def status(self) -> dict[str, dict[str, Any]]:
        """Per realtime feed: its query's state and what it committed (``/status``)."""
        with self._guard:
            jobs = list(self._jobs.values())
        out = {}
        for job in jobs:
            runner = job.runner
            self._tally(job)
            out[job.feed.name] = {
                "state": self._state(job), "query_id": runner.query_id if runner else None,
                "commits": job.commits, "rows": job.rows, "reconnects": job.reconnects,
                "pending_rows": runner.pending_rows if runner else 0,
                "newest_rowtime_ms": job.newest_rowtime_ms,
                "lag_s": self._lag(job), "error": job.error,
            }
        return out

    # -- the thread -------------------------------------------------------------------------

    def _loop(self, job: _Job) -> None:
        name = job.feed.name
        with structlog.contextvars.bound_contextvars(feed=name):
            while not job.stop.is_set():
                retry = FAILED_RETRY_S
                backend = self._backend()
                if backend is None:
                    break
                backend.acquire()
                try:
                    exporter = backend.exporter
                    runner = exporter.realtime(job.feed, stop=job.stop, clock=self._clock,
                                               on_commit=lambda r, d, n: self._committed(
                                                   job, d, n))
                    self._tally(job)
                    job.counted = {}
                    job.runner, job.error = runner, None
                    if job.state != "standby":  # a standby stays one while it tries again
                        job.state = "starting"
                    exporter.run_realtime(runner, lock_wait=self._lock_wait())
                except FeedLocked as exc:
                    if job.state != "standby":
                        log.info("realtime.standby", feed=name, reason=str(exc),
                                 hint="another process holds the feed; this daemon takes it "
                                 "over when that holder stops (or its lease runs out)")
                    job.state, job.error, retry = "standby", None, LOCKED_RETRY_S
                except LakeExportError as exc:
                    job.state, job.error = "failed", str(exc)
                    log.error("realtime.stopped_on_error", feed=name, error=str(exc),
                              error_type=type(exc).__name__, retry_in_s=retry,
                              hint="what was committed stays; the feed starts again from "
                              "its committed offsets")
                except Exception as exc:  # noqa: BLE001 - one feed must not end the daemon
                    job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
                    log.exception("realtime.crashed", feed=name, retry_in_s=retry)
                finally:
                    self._tally(job)
                    backend.release()
                if job.stop.wait(retry):
                    break
            job.state = "stopped"

    def _committed(self, job: _Job, doc: FeedMetadata, rows: int) -> None:
        """A rotation committed: it counts as a successful run of the feed (runs, rows,
        bytes, last success, lag from the watermark, listed files) like a batch run."""
        runner, name = job.runner, job.feed.name
        job.error = None
        if runner is not None and runner.newest_rowtime_ms is not None:
            job.newest_rowtime_ms = max(job.newest_rowtime_ms or 0, runner.newest_rowtime_ms)
        record = doc.exports[-1] if doc.exports else None
        duration = 0.0
        if record is not None:
            started, finished = _epoch(record.started), _epoch(record.finished)
            duration = max(0.0, finished - started)
        self._metrics.observe_run(name, "success", duration_s=duration, rows=rows,
                                  bytes_written=(record.size_bytes or 0) if record else 0)
        assert isinstance(doc, StreamMetadata)
        self._metrics.set_progress(
            name, last_success=self._clock().timestamp(),
            lag_origin=None if doc.watermark_ms is None else doc.watermark_ms / 1000,
            listed_files=current_file_count(doc), listed_bytes=doc.total_size_bytes)
        if runner is not None and runner.catalog is not None and in_catalog(job.feed):
            self._metrics.observe_catalog(name, behind=runner.catalog_behind is not None)

    def _tally(self, job: _Job) -> None:
        """Add the current runner's counts since the last tally to the job's totals (and
        its newest ROWTIME: the lag)."""
        runner = job.runner
        if runner is None:
            return
        with job.lock:
            if runner.newest_rowtime_ms is not None:  # from the lake at its query's start
                job.newest_rowtime_ms = max(job.newest_rowtime_ms or 0,
                                            runner.newest_rowtime_ms)
            for key in ("commits", "rows", "reconnects"):
                now = getattr(runner, "rows_committed" if key == "rows" else key)
                setattr(job, key, getattr(job, key) + now - job.counted.get(key, 0))
                job.counted[key] = now

    def _state(self, job: _Job) -> str:
        runner = job.runner
        if job.state == "standby" and runner is not None and runner.holding:
            return runner.state  # the lock was taken: the standby took the feed over
        if job.state in ("standby", "failed", "stopped"):
            return job.state
        return runner.state if runner is not None else job.state

    def _lag(self, job: _Job) -> float | None:
        if job.newest_rowtime_ms is None:
            return None
        return max(0.0, self._clock().timestamp() - job.newest_rowtime_ms / 1000)

    def families(self) -> Iterable[Metric]:
        lag = GaugeMetricFamily(
            "lakeexportd_realtime_lag_seconds", "Realtime feeds: now minus the newest ROWTIME "
            "committed to the lake (grows while the source is quiet too).", labels=["feed"])
        state = GaugeMetricFamily(
            "lakeexportd_realtime_query", "Realtime feeds: 1 for the state their push query "
            "is in (starting, running, reconnecting, failed, standby: held by another "
            "process, stopped).", labels=["feed", "state"])
        commits = CounterMetricFamily(
            "lakeexportd_realtime_commits", "Realtime rotations committed.", labels=["feed"])
        reconnects = CounterMetricFamily(
            "lakeexportd_realtime_reconnects", "Realtime push queries started again after "
            "an end, a break or a failure.", labels=["feed"])
        for name, info in sorted(self.status().items()):
            if info["lag_s"] is not None:
                lag.add_metric([name], info["lag_s"])
            for s in STATES:
                state.add_metric([name, s], 1.0 if info["state"] == s else 0.0)
            commits.add_metric([name], info["commits"])
            reconnects.add_metric([name], info["reconnects"])
        return [lag, state, commits, reconnects]


class _Collector(Collector):
    def __init__(self, jobs: RealtimeJobs) -> None:
        self._jobs = jobs

    def collect(self) -> Iterable[Metric]:
        return self._jobs.families()


def _epoch(stamp: str) -> float:
    return parse_iso(stamp).timestamp()
