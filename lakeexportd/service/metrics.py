"""Prometheus metrics of the daemon (DESIGN.md section 8: the names are fixed).

``Metrics`` registers everything on the ``CollectorRegistry`` it is given (never the global
one, so tests build as many as they like). Per-feed series appear in ``add_feed`` and vanish in
``remove_feed``. Lag and last success are kept as timestamps and turned into values at scrape
time, so ``lakeexportd_lag_seconds`` keeps growing between runs, as an alerting rule expects.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lakeexportd import __version__

Result = Literal["success", "failed", "transient", "skipped", "aborted"]
RESULTS: Final[tuple[Result, ...]] = ("success", "failed", "transient", "skipped", "aborted")
STATES: Final = ("active", "disabled", "archived")
# Exports take from a fraction of a second (an empty stream window) to many minutes (a first
# export of a large topic).
DURATION_BUCKETS: Final = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

# The feed whose run is making the current ksqlDB request: the client is shared by every
# feed, so its observer learns the feed from the run's context (each run sets it).
current_feed: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "lakeexportd_current_feed", default=None
)


class _FeedState:
    """What the scrape-time gauges are computed from, for one feed."""

    __slots__ = ("lag_origin", "last_success", "table_versions", "rejected_columns",
                 "tier_bytes", "tier_results", "listed_files", "listed_bytes", "delta_version",
                 "compaction_results", "catalog_behind", "catalog_outcomes")

    def __init__(self) -> None:
        self.lag_origin: float | None = None  # epoch seconds the lag counts from
        self.last_success: float | None = None
        self.table_versions: int | None = None
        self.rejected_columns: set[str] = set()  # label values of rejected_values
        self.tier_bytes: dict[str, int] = {}  # storage class ("default") -> bytes listed
        self.tier_results: set[str] = set()  # label values of tier_runs
        self.listed_files: int | None = None  # what the feed's last commit lists
        self.listed_bytes: int | None = None
        self.delta_version: int | None = None  # Delta feeds only
        self.compaction_results: set[str] = set()  # label values of compaction_runs
        self.catalog_behind: bool | None = None  # None: not catalogued, or no run yet
        self.catalog_outcomes: set[str] = set()  # label values of catalog_syncs


class _ScrapeTimeCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics._scrape_time_families()


class Metrics:
    """Every ``lakeexportd_*`` metric, registered on ``registry``."""

    def __init__(
        self, registry: CollectorRegistry, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry
        self._clock = clock
        self._lock = threading.Lock()
        self._feeds: dict[str, _FeedState] = {}
        self.runs = Counter(
            "lakeexportd_export_runs", "Export runs by feed and result "
            "(success, failed, transient, skipped: feed locked, aborted: shutdown).",
            ["feed", "result"], registry=registry,
        )
        self.rows = Counter(
            "lakeexportd_rows_written", "Rows written (tables: the whole snapshot of each run).",
            ["feed"], registry=registry,
        )
        self.bytes = Counter(
            "lakeexportd_bytes_written", "Parquet bytes written.", ["feed"], registry=registry
        )
        self.duration = Histogram(
            "lakeexportd_export_duration_seconds", "Duration of export runs, whatever the result.",
            ["feed"], buckets=DURATION_BUCKETS, registry=registry,
        )
        self.feeds = Gauge(
            "lakeexportd_feeds", "Configured feeds by state.", ["state"], registry=registry
        )
        self.reloads = Counter(
            "lakeexportd_config_reloads", "Configuration reloads (SIGHUP) by result.",
            ["result"], registry=registry,
        )
        self.requests = Counter(
            "lakeexportd_ksqldb_requests", "HTTP requests to ksqlDB by endpoint and status "
            "code ('error' when no answer came).", ["endpoint", "code"], registry=registry,
        )
        self.retries = Counter(
            "lakeexportd_retries", "ksqlDB requests retried after a transient failure.",
            ["feed"], registry=registry,
        )
        self.rejected = Counter(
            "lakeexportd_rejected_values", "Runs failed on a value its column's type cannot hold "
            "exactly (a DECIMAL that would need rounding), by feed and column.",
            ["feed", "column"], registry=registry,
        )
        self.tier_runs = Counter(
            "lakeexportd_tier_runs", "Daily tiering runs by feed and result (feeds with "
            "`tiering:`; aborted: stopped by shutdown between two objects).",
            ["feed", "result"], registry=registry,
        )
        self.compaction_runs = Counter(
            "lakeexportd_compaction_runs", "Daily compaction runs by feed and result (stream "
            "feeds with `compaction:`; aborted: stopped by shutdown between two days).",
            ["feed", "result"], registry=registry,
        )
        self.compacted_files = Counter(
            "lakeexportd_compacted_files", "Small data files compaction replaced (each closed "
            "day's files become few files near compaction.target_file_size).",
            ["feed"], registry=registry,
        )
        self.catalog_syncs = Counter(
            "lakeexportd_catalog_syncs", "Iceberg catalog syncs after export runs, by feed and "
            "outcome (success: the table is level with the run's commit; failed: the catalog "
            "was down, slow or refused, and the feed is behind).",
            ["feed", "outcome"], registry=registry,
        )
        self.up = Gauge("lakeexportd_up", "1 while the daemon runs.", registry=registry)
        self.ready = Gauge(
            "lakeexportd_ready", "1 when the config is loaded and the scheduler runs.",
            registry=registry,
        )
        self.info = Gauge(
            "lakeexportd_build_info", "Always 1; the version is in the label.", ["version"],
            registry=registry,
        )
        self.info.labels(version=__version__).set(1)
        for result in ("success", "error"):
            self.reloads.labels(result=result)
        registry.register(_ScrapeTimeCollector(self))

    # -- feeds -----------------------------------------------------------------------------

    def add_feed(self, feed: str) -> None:
        """Create the feed's series (zeros), so dashboards and rate() see it from the start."""
        with self._lock:
            if feed in self._feeds:
                return
            self._feeds[feed] = _FeedState()
        for result in RESULTS:
            self.runs.labels(feed=feed, result=result)
        self.rows.labels(feed=feed)
        self.bytes.labels(feed=feed)
        self.duration.labels(feed=feed)
        self.retries.labels(feed=feed)

    def remove_feed(self, feed: str) -> None:
        with self._lock:
            state = self._feeds.pop(feed, None)
            if state is None:
                return
        for result in RESULTS:
            self.runs.remove(feed, result)
        for metric in (self.rows, self.bytes, self.duration, self.retries):
            metric.remove(feed)
        for column in state.rejected_columns:
            self.rejected.remove(feed, column)
        for outcome in state.tier_results:
            self.tier_runs.remove(feed, outcome)
        for outcome in state.compaction_results:
            self.compaction_runs.remove(feed, outcome)
        if state.compaction_results:
            self.compacted_files.remove(feed)
        for outcome in state.catalog_outcomes:
            self.catalog_syncs.remove(feed, outcome)

    def rejected_value(self, feed: str, column: str) -> None:
        """Count a run that failed on a value ``column`` cannot hold exactly."""
        with self._lock:
            state = self._feeds.get(feed)
            if state is None:
                return
            state.rejected_columns.add(column)
        self.rejected.labels(feed=feed, column=column).inc()

    def observe_tier_run(self, feed: str, result: Result) -> None:
        """Count one finished tiering run of ``feed``."""
        with self._lock:
            state = self._feeds.get(feed)
            if state is None:
                return
            state.tier_results.add(result)
        self.tier_runs.labels(feed=feed, result=result).inc()

    def observe_compaction_run(self, feed: str, result: Result, *, files: int) -> None:
        """Count one finished compaction run of ``feed`` and the files it replaced."""
        with self._lock:
            state = self._feeds.get(feed)
            if state is None:
                return
            state.compaction_results.add(result)
        self.compaction_runs.labels(feed=feed, result=result).inc()
        self.compacted_files.labels(feed=feed).inc(files)

    def observe_catalog(self, feed: str, *, behind: bool) -> None:
        """A run of a catalogued feed: its catalog sync succeeded (level) or not (behind).
        Both outcomes' series appear with the first, so ``increase()`` sees the first
        failure."""
        with self._lock:
            state = self._feeds.get(feed)
            if state is None:
                return
            state.catalog_behind = behind
            new = {"success", "failed"} - state.catalog_outcomes
            state.catalog_outcomes |= new
        for outcome in new:
            self.catalog_syncs.labels(feed=feed, outcome=outcome)
        self.catalog_syncs.labels(feed=feed, outcome="failed" if behind else "success").inc()

    def set_tier_bytes(self, feed: str, per_tier: dict[str, int]) -> None:
        """The feed's listed bytes per storage class, as shown (``default``: the store's)."""
        with self._lock:
            state = self._feeds.get(feed)
            if state is not None:
                state.tier_bytes = dict(per_tier)

    def known(self, feed: str) -> bool:
        with self._lock:
            return feed in self._feeds

    def set_feed_counts(self, active: int, disabled: int, archived: int = 0) -> None:
        for state, count in zip(STATES, (active, disabled, archived), strict=True):
            self.feeds.labels(state=state).set(count)

    # -- runs ------------------------------------------------------------------------------

    def observe_run(
        self,
        feed: str,
        result: Result,
        *,
        duration_s: float,
        rows: int = 0,
        bytes_written: int = 0,
    ) -> None:
        """Count one finished run; a feed removed while it ran is not counted (no series)."""
        if not self.known(feed):
            return
        self.runs.labels(feed=feed, result=result).inc()
        self.duration.labels(feed=feed).observe(duration_s)
        if result == "success":
            self.rows.labels(feed=feed).inc(rows)
            self.bytes.labels(feed=feed).inc(bytes_written)

    def set_progress(
        self,
        feed: str,
        *,
        last_success: float | None = None,
        lag_origin: float | None = None,
        table_versions: int | None = None,
        listed_files: int | None = None,
        listed_bytes: int | None = None,
        delta_version: int | None = None,
    ) -> None:
        """Record a success time, the point lag counts from (epoch seconds), versions kept,
        the files and bytes the feed lists now, and a Delta feed's table version."""
        with self._lock:
            state = self._feeds.get(feed)
            if state is None:
                return
            if last_success is not None:
                state.last_success = last_success
            if lag_origin is not None:
                state.lag_origin = lag_origin
            if table_versions is not None:
                state.table_versions = table_versions
            if listed_files is not None:
                state.listed_files = listed_files
            if listed_bytes is not None:
                state.listed_bytes = listed_bytes
            if delta_version is not None:
                state.delta_version = delta_version

    # -- ksqlDB client observer ------------------------------------------------------------

    def observer(self) -> RequestCounter:
        return RequestCounter(self)

    @contextlib.contextmanager
    def feed_context(self, feed: str) -> Iterator[None]:
        """Attribute the ksqlDB retries made inside the block to ``feed``."""
        token = current_feed.set(feed)
        try:
            yield
        finally:
            current_feed.reset(token)

    # -- scrape ----------------------------------------------------------------------------

    def _scrape_time_families(self) -> Iterator[Metric]:
        now = self._clock()
        lag = GaugeMetricFamily(
            "lakeexportd_lag_seconds", "Now minus the watermark (streams) or minus the current "
            "version's scan start (tables).", labels=["feed"],
        )
        success = GaugeMetricFamily(
            "lakeexportd_last_success_timestamp_seconds", "When the feed's last successful run "
            "finished (Unix time).", labels=["feed"],
        )
        versions = GaugeMetricFamily(
            "lakeexportd_table_versions", "Snapshot versions kept on disk (tables).",
            labels=["feed"],
        )
        tiers = GaugeMetricFamily(
            "lakeexportd_tier_bytes", "Bytes a stream lists per storage class ('default': the "
            "store's own), as of its last tiering run or the daemon's start (feeds with "
            "`tiering:`).", labels=["feed", "tier"],
        )
        files = GaugeMetricFamily(
            "lakeexportd_lake_files", "Data files the feed lists now (streams: every day; "
            "tables: the current version; Delta feeds: the log's active files).",
            labels=["feed"],
        )
        listed_bytes = GaugeMetricFamily(
            "lakeexportd_lake_bytes", "Bytes of the data files the feed lists now (as "
            "lakeexportd_lake_files).", labels=["feed"],
        )
        delta = GaugeMetricFamily(
            "lakeexportd_delta_version", "The Delta table version after the feed's last run "
            "(`format: delta` feeds).", labels=["feed"],
        )
        behind = GaugeMetricFamily(
            "lakeexportd_catalog_behind", "1 when the feed's Iceberg table is behind the lake "
            "(its last run's catalog sync failed; `lakeexportd catalog sync` catches up), 0 "
            "when level (Parquet feeds with a `catalog:`, after their first run).",
            labels=["feed"],
        )
        with self._lock:
            states = sorted(self._feeds.items())
            tier_bytes = {feed: dict(state.tier_bytes) for feed, state in states}
        for feed, per_tier in tier_bytes.items():
            for tier, size in sorted(per_tier.items()):
                tiers.add_metric([feed, tier], size)
        for feed, state in states:
            if state.lag_origin is not None:
                lag.add_metric([feed], max(0.0, now - state.lag_origin))
            if state.last_success is not None:
                success.add_metric([feed], state.last_success)
            if state.table_versions is not None:
                versions.add_metric([feed], state.table_versions)
            if state.listed_files is not None:
                files.add_metric([feed], state.listed_files)
            if state.listed_bytes is not None:
                listed_bytes.add_metric([feed], state.listed_bytes)
            if state.delta_version is not None:
                delta.add_metric([feed], state.delta_version)
            if state.catalog_behind is not None:
                behind.add_metric([feed], 1 if state.catalog_behind else 0)
        yield from (lag, success, versions, tiers, files, listed_bytes, delta, behind)


class RequestCounter:
    """The ksqlDB client's ``RequestObserver``: counts requests and per-feed retries."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def request(self, endpoint: str, code: str) -> None:
        self._metrics.requests.labels(endpoint=endpoint, code=code).inc()

    def retry(self, endpoint: str) -> None:
        feed = current_feed.get()
        if feed is not None and self._metrics.known(feed):
            self._metrics.retries.labels(feed=feed).inc()
