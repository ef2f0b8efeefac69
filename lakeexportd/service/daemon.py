"""The long-running daemon: one scheduled job per active feed, reload on SIGHUP, stop on SIGTERM.

The main thread owns the signals: handlers only enqueue, and ``run()`` loops on that queue,
calling ``reload()`` or ``stop()`` (plain methods tests call directly) and pinging systemd's
watchdog. Exports run on APScheduler's thread pool (``scheduler.workers``), at most one per
feed, missed ticks coalesced. The daemon owns the clock: each run reads ``clock()`` once and
passes it to ``exporter.export(feed, now)``.

The feed registry (``feeds.py``) is synced with the YAML at start and on every reload, and
re-read every ``registry_poll`` seconds from the main loop and before each run, so what
``lakeexportd feeds enable|disable|add|archive`` changes applies without a restart or a pid file:
a disabled feed skips its next tick and is unscheduled; an enabled or added one is scheduled.

A reload never interrupts a run: a job holds the frozen ``Feed`` and the exporter it started
with, so a rescheduled or removed feed's running export finishes as configured before. A
changed ``ksqldb`` section, lake root or lock wait builds a new exporter for later runs; the
old client closes when its last run ends. ``stop()`` lets runs finish within
``scheduler.stop_grace``, then sets the cancel event: they abort without publishing.

A stream feed with ``tiering`` also gets a daily job (``tier:<feed>``, first a minute after it
is scheduled): ``service/tiering.py`` moves its old partitions to the colder class under the
feed's lock, batch by batch, so it never runs at the same time as the feed's export.
Likewise a stream feed with ``compaction`` (the default) gets ``compact:<feed>``
(``service/compaction.py``): its closed days' small files become few large ones.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry

from lakeexportd import __version__
from lakeexportd.config.load import load_config
from lakeexportd.config.model import Config, Feed
from lakeexportd.errors import ConfigError, LakeExportError
from lakeexportd.feeds.manager import FeedManager
from lakeexportd.lake.configured import check_store, lake_of
from lakeexportd.lake.presence import DaemonInfo, Presence
from lakeexportd.lake.storage import Storage
from lakeexportd.lake.tiering import Tierer
from lakeexportd.service import compaction, runs, scheduling, tiering
from lakeexportd.service.backends import Backend, ExporterFactory, backend_key, build_exporter
from lakeexportd.service.metrics import Metrics
from lakeexportd.service.metrics_http import MetricsServer, MetricsServerError
from lakeexportd.service.realtime import RealtimeJobs
from lakeexportd.service.sdnotify import Notifier

PRESENCE_SWEEP = "presence-sweep"  # the job removing dead daemons' entries (object stores)
log = structlog.get_logger(__name__)

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Daemon:
    """Schedules the active feeds of a ``Config``; ``start``, ``reload``, ``stop``, ``run``."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock = utc_now,
        loader: Callable[[str], Config] = load_config,
        exporter_factory: ExporterFactory = build_exporter,
        registry: CollectorRegistry | None = None,
        notifier: Notifier | None = None,
        serve_metrics: bool = True,
        registry_poll: float = 5.0,
    ) -> None:
        self.config = config
        self.clock = clock
        self.loader = loader
        self.exporter_factory = exporter_factory
        self.notifier = notifier or Notifier(None)
        self.metrics = Metrics(registry or CollectorRegistry(), clock=lambda: clock().timestamp())
        self.cancel = threading.Event()  # set past stop_grace: running exports abort
        self.events: queue.SimpleQueue[str] = queue.SimpleQueue()  # reentrant: signal-safe
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(
                config.scheduler.workers, pool_kwargs={"thread_name_prefix": "export"})},
            timezone=dt.UTC,
        )
        self.server = MetricsServer(
            self.metrics.registry, config.metrics.host, config.metrics.port, self.is_ready,
            self.status,
        ) if serve_metrics else None
        self.presence: Presence | None = None
        self.feeds: dict[str, Feed] = {}  # the active feeds that have a job
        self.holds = runs.Holds()  # feeds not run again on each tick after a rejected value
        self.state = "new"  # new -> running -> stopping -> stopped
        self._backend: Backend | None = None
        self._running: dict[int, str] = {}  # thread id -> feed, for stop() to wait on
        # Feeds whose last run was skipped: another process (a daemon on the same lake, a CLI
        # run) held their lock or lease. /status says so; the holder runs them.
        self._held_elsewhere: set[str] = set()
        self._idle = threading.Condition()
        self.registry_poll = registry_poll
        self.manager = self._manager(config)
        self._sync_pending = False
        self._applied = False  # start() applied the configuration's feeds: /readyz
        # `mode: realtime` feeds: a thread each, not a scheduled job (service/realtime.py).
        self.realtime = RealtimeJobs(
            lambda: self._backend if self.state == "running" else None, clock=clock,
            metrics=self.metrics, lock_wait=lambda: self.config.scheduler.lock_wait)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Serve metrics, schedule the active feeds, tell systemd we are ready."""
        if self.config.lake.url is not None:  # an object store: are its fences real? (DESIGN 11)
            check_store(lake_of(self.config.lake))
        self._backend = self._new_backend(self.config)
        self._sync(self.manager, self.config)  # a ConfigError here is an invalid start: 78
        others = self._claim_presence(self.config)
        if self.server is not None:
            try:
                self.server.start()
            except MetricsServerError as exc:
                same = [d for d in others if d.metrics == self.config.metrics.listen]
                if not same:
                    raise
                raise MetricsServerError(
                    f"{exc}. Another lakeexportd already runs on this lake with this "
                    f"metrics.listen: {same[0].describe()}. One daemon per lake and config is "
                    "enough (`lakeexportd status` shows it); a standby needs its own "
                    "metrics.listen"
                ) from exc
        self.metrics.up.set(1)
        self.scheduler.start()
        self.state = "running"
        self._apply(self.config, initial=True)
        self._applied = True
        self.metrics.ready.set(1)
        log.info("daemon.started", config=str(self.config.path), feeds=sorted(self.feeds),
                 workers=self.config.scheduler.workers, metrics=self.config.metrics.listen)
        self.notifier.ready(self._status())

    def is_ready(self) -> bool:
        """Running, with the configuration's feeds applied (scheduled, realtime started)."""
        return self.state == "running" and self.scheduler.running and self._applied

    def status(self) -> dict[str, Any]:
        """What ``/status`` serves: this daemon, and per scheduled feed its next run and
        whether it runs now (called from the HTTP server's threads)."""
        running = set(self.running())
        feeds: dict[str, dict[str, Any]] = {}
        for name in sorted(self.feeds):
            job = self.scheduler.get_job(name) if self.scheduler.running else None
            when = getattr(job, "next_run_time", None)
            feeds[name] = {"next_run": when.astimezone(dt.UTC).isoformat() if when else None,
                           "running": name in running,
                           "held_elsewhere": name in self._held_elsewhere}
        info = self.presence.info if self.presence is not None else None
        realtime = self.realtime.status()
        for name, query in realtime.items():
            if name in feeds:
                feeds[name].update(mode="realtime", running=query["state"] == "running",
                                   held_elsewhere=query["state"] == "standby", query=query)
        return {"state": self.state, "pid": info.pid if info else None,
                "host": info.host if info else None, "started": info.started if info else None,
                "feeds": feeds}

    def _sweep_presence(self) -> None:
        presence = self.presence
        if presence is None:
            return
        try:
            removed = presence.sweep()
        except LakeExportError as exc:
            log.warning("daemon.presence_sweep_failed", reason=str(exc))
            return
        for path in removed:
            log.info("daemon.stale_entry_removed", entry=str(path),
                     hint="a daemon that stopped renewing its entry for a lease ttl")

    def _claim_presence(self, config: Config) -> list[DaemonInfo]:
        """Register this daemon in ``<lake>/.daemons/``; log the others found there."""
        lake = lake_of(config.lake)
        presence = Presence(lake.root, config=str(config.path),
                            metrics=config.metrics.listen, version=__version__, now=self.clock(),
                            storage=lake.storage)
        try:
            others = presence.claim()
        except LakeExportError as exc:
            log.error("daemon.presence_unwritable", reason=str(exc),
                      hint="`lakeexportd status` will not see this daemon")
            return []
        self.presence = presence
        if lake.storage.leases:  # entries of dead daemons go once seen stale for a ttl
            every = max(config.lake.lease_ttl, 1.0)
            self.scheduler.add_job(
                self._sweep_presence, IntervalTrigger(seconds=every, timezone=dt.UTC),
                id=PRESENCE_SWEEP, name=PRESENCE_SWEEP, max_instances=1, coalesce=True,
                replace_existing=True,
            )
        else:
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(PRESENCE_SWEEP)
        for other in others:
            log.warning("daemon.another_on_lake", other_pid=other.pid, other_host=other.host,
                        other_started=other.started, other_config=other.config,
                        hint="each feed still runs once at a time (per-feed locks); "
                        "`lakeexportd status` lists the daemons")
        return others

    def reload(self) -> bool:
        """Load the config file again and apply what changed; keep the old config if invalid."""
        self.notifier.reloading("reloading configuration")
        try:
            new = self.loader(str(self.config.path))
            same_root = new.lake == self.config.lake
            if not same_root and new.lake.url is not None:
                check_store(lake_of(new.lake))  # a new object store: the same check as at start
            manager = self.manager if same_root else self._manager(new)
            self._sync(manager, new)  # refuses e.g. an archived name reused for another source
        except LakeExportError as exc:
            self.metrics.reloads.labels(result="error").inc()
            log.error("config.reload_failed", path=str(self.config.path), reason=str(exc),
                      kept_feeds=sorted(self.feeds))
            self.notifier.ready(self._status("reload failed; old configuration kept"))
            return False
        self.manager = manager
        restart = scheduling.restart_needed(self.config, new)
        if restart:
            log.warning("config.restart_needed", keys=restart,
                        hint="these settings apply at the next start: systemctl restart")
        if backend_key(new) != backend_key(self.config):
            old, self._backend = self._backend, self._new_backend(new)
            if old is not None:
                old.retire()  # closes once its running exports end
            log.info("config.exporter_rebuilt", ksqldb=new.ksqldb.url, lake=new.lake.where)
            for name in self.realtime.names():  # their query and lock move to the new one
                self.realtime.stop(name)
                self.feeds.pop(name, None)  # _apply starts them again as added
        # The new config is current before any job of it can run: a feed the reload adds runs
        # at once, and its run checks the registry against self.config.
        previous, self.config = self.config, new
        if new.lake != previous.lake and self.presence is not None:
            self.presence.release()
            self.presence = None
            self._claim_presence(new)
        diff = self._apply(new, initial=False, old=previous)
        self.metrics.reloads.labels(result="success").inc()
        log.info("config.reloaded", path=str(new.path), added=[f.name for f in diff.added],
                 rescheduled=[f.name for f in diff.changed],
                 removed=[f.name for f in diff.removed])
        self.notifier.ready(self._status())
        return True

    def stop(self) -> None:
        """Stop scheduling; let runs finish within stop_grace, then abort them; close up."""
        if self.state in ("stopping", "stopped"):
            return
        with self._idle:
            self.state = "stopping"
        self.metrics.ready.set(0)
        grace = self.config.scheduler.stop_grace
        self.notifier.stopping(f"stopping: {len(self.running())} exports running")
        log.info("daemon.stopping", running=self.running(), grace_s=grace)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        # Realtime feeds: /close-query, then what they wrote is committed (within the grace).
        self.realtime.stop_all(grace)
        if not self.wait_idle(grace):
            log.warning("daemon.aborting_exports", running=self.running(), grace_s=grace)
            self.cancel.set()
            self.wait_idle(None)
        if self._backend is not None:
            self._backend.retire()
        if self.server is not None:
            self.server.stop()
        if self.presence is not None:
            self.presence.release()
        self.metrics.up.set(0)
        self.state = "stopped"
        log.info("daemon.stopped")

    def run(self) -> int:
        """Run until SIGTERM/SIGINT: the main loop. Returns the exit code (0)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM,
                                                             signal.SIGINT)}
        signal.signal(signal.SIGHUP, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.start()
            tick = min(self.notifier.watchdog_interval or 1.0, self.registry_poll)
            next_poll = time.monotonic() + self.registry_poll
            while True:
                try:
                    event = self.events.get(timeout=tick)
                except queue.Empty:
                    event = None
                if self.notifier.watchdog_interval is not None:
                    self.notifier.watchdog()  # from the main loop: a hung loop stops pinging
                if event == "reload":
                    self.reload()
                elif event == "stop":
                    break
                if time.monotonic() >= next_poll:
                    self.refresh()
                    next_poll = time.monotonic() + self.registry_poll
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def refresh(self) -> None:
        """Re-read the feed registry and apply what operators changed with the CLI."""
        if self.state != "running":
            return
        try:
            if self._sync_pending:
                self._sync(self.manager, self.config)
            self._apply(self.config, initial=False)
        except LakeExportError as exc:
            log.error("feed.registry_unreadable", reason=str(exc), kept_feeds=sorted(self.feeds))

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.events.put("reload" if signum == signal.SIGHUP else "stop")

    # -- runs ------------------------------------------------------------------------------

    def running(self) -> list[str]:
        with self._idle:
            return sorted(self._running.values())

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no export runs; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout)

    def run_feed(self, feed: Feed) -> str | None:
        """The job: export ``feed`` once (the ``Feed`` the job was scheduled with)."""
        me = threading.get_ident()
        with self._idle:  # atomic with stop()'s state change: no run starts after it
            backend = self._backend
            if self.state != "running" or backend is None:
                return None  # queued in the pool before stop(): do not start
            if not self._still_active(feed):
                return None
            self._running[me] = feed.name
        backend.acquire()
        try:
            outcome = runs.run_export(
                backend.exporter, feed, self.clock(), cancel=self.cancel, metrics=self.metrics,
                wall_clock=lambda: self.clock().timestamp(), holds=self.holds,
            )
            with self._idle:
                if outcome == "skipped":
                    self._held_elsewhere.add(feed.name)
                elif outcome is not None:
                    self._held_elsewhere.discard(feed.name)
            return outcome
        finally:
            with self._idle:
                del self._running[me]
                self._idle.notify_all()
            backend.release()

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _lake(config: Config) -> tuple[Path, Storage]:
        lake = lake_of(config.lake)
        return lake.root, lake.storage

    def _manager(self, config: Config) -> FeedManager:
        lake = lake_of(config.lake)
        return FeedManager(lake.root, now=self.clock, lock_wait=config.scheduler.lock_wait,
                           storage=lake.storage)

    def _sync(self, manager: FeedManager, config: Config) -> None:
        """Sync the registry with ``config``; a ConfigError (a refused name reuse) propagates.

        A registry that cannot be written (read-only or full lake) must not stop the daemon:
        the YAML's feeds run as declared, their runs fail with the real error until the lake
        is writable, and ``refresh`` retries the sync.
        """
        try:
            report = manager.sync_from_config(config)
        except ConfigError:
            raise
        except LakeExportError as exc:
            self._sync_pending = True
            log.error("feed.registry_unwritable", reason=str(exc),
                      hint="feeds run as the YAML declares; retried every few seconds")
            return
        self._sync_pending = False
        if report.changed:
            log.info("feed.registry_synced", changes=report.lines())

    def tier_feed(self, feed: Feed) -> str | None:
        """The daily tiering job of ``feed`` (one with ``tiering``)."""
        def tier() -> str | None:
            lake = lake_of(self.config.lake)
            tierer = Tierer(lake.storage, lake.root, lock_wait=self.config.scheduler.lock_wait)
            return tiering.run_tiering(tierer, feed, self.clock(), cancel=self.cancel,
                                       metrics=self.metrics)
        return self._daily_job(feed, tier)

    def compact_feed(self, feed: Feed) -> str | None:
        """The daily compaction job of ``feed`` (a stream with ``compaction``)."""
        def compact() -> str | None:
            lake = lake_of(self.config.lake)
            backend = self._backend
            catalog = getattr(backend.exporter, "catalog", None) if backend else None
            return compaction.run_compaction(
                lake.storage, lake.root, feed, self.clock(),
                lock_wait=self.config.scheduler.lock_wait,
                orphan_grace=self.config.lake.orphan_grace, cancel=self.cancel,
                metrics=self.metrics, catalog=catalog)
        return self._daily_job(feed, compact)

    def _daily_job(self, feed: Feed, work: Callable[[], str | None]) -> str | None:
        """Run ``work`` for ``feed`` while the daemon runs and the feed is active, counted
        among the running jobs a shutdown waits for."""
        me = threading.get_ident()
        with self._idle:
            if self.state != "running" or not self._still_active(feed):
                return None
            self._running[me] = feed.name
        try:
            return work()
        finally:
            with self._idle:
                del self._running[me]
                self._idle.notify_all()

    def _schedule_compaction(self, diff: scheduling.FeedDiff, jitter: float) -> None:
        """A daily ``compact:<feed>`` job for each scheduled stream with ``compaction``."""
        self._schedule_daily(diff, jitter, "compact", self.compact_feed,
                             lambda feed: feed.compaction, field="compaction",
                             every=compaction.COMPACT_EVERY,
                             first_delay=compaction.COMPACT_FIRST_DELAY)

    def _schedule_tiering(self, diff: scheduling.FeedDiff, jitter: float) -> None:
        """A daily ``tier:<feed>`` job for each scheduled stream with ``tiering``, none else."""
        self._schedule_daily(diff, jitter, "tier", self.tier_feed, lambda feed: feed.tiering,
                             field="tiering", every=tiering.TIER_EVERY,
                             first_delay=tiering.TIER_FIRST_DELAY)

    def _schedule_daily(self, diff: scheduling.FeedDiff, jitter: float, kind: str,
                        run: Callable[[Feed], object], setting: Callable[[Feed], object],
                        *, field: str, every: float, first_delay: float) -> None:
        """A ``<kind>:<feed>`` job every ``every`` s for each scheduled stream whose
        ``setting`` is on (first ``first_delay`` s from now: its export goes first); removed
        with the feed or the setting. Logs ``<kind>.scheduled`` with the setting as ``field``."""
        for feed in (*diff.removed, *diff.added, *diff.changed):
            job = f"{kind}:{feed.name}"
            if feed in diff.removed or setting(feed) is None or feed.kind != "stream" \
                    or feed.realtime:  # a realtime feed's own thread does it (its lock)
                with contextlib.suppress(JobLookupError):
                    self.scheduler.remove_job(job)
                continue
            first = utc_now() + dt.timedelta(seconds=first_delay)
            self.scheduler.add_job(
                run, IntervalTrigger(seconds=every, jitter=jitter or None, timezone=dt.UTC),
                args=[feed], id=job, name=job, max_instances=1, coalesce=True,
                misfire_grace_time=int(every), replace_existing=True, next_run_time=first,
            )
            log.info(f"{kind}.scheduled", feed=feed.name, **{field: str(setting(feed))},
                     first_run=first.isoformat(timespec="seconds"))

    def _still_active(self, feed: Feed) -> bool:
        """Re-read the registry before a run: the CLI may have disabled or archived the feed."""
        try:
            names = {f.name for f in self.manager.effective_feeds(self.config)}
        except LakeExportError as exc:
            log.error("feed.registry_unreadable", feed=feed.name, reason=str(exc))
            return True  # an unreadable registry must not stop exports the YAML asks for
        if feed.name in names:
            return True
        log.info("feed.skipped", feed=feed.name, reason="disabled or archived in the registry")
        return False

    def _new_backend(self, config: Config) -> Backend:
        exporter, close = self.exporter_factory(config, self.metrics.observer())
        return Backend(exporter, close)

    def _apply(
        self, new: Config, *, initial: bool, old: Config | None = None
    ) -> scheduling.FeedDiff:
        old = old or self.config
        wanted = scheduling.active(self.manager.effective_feeds(new))
        jitter_changed = new.scheduler.jitter != old.scheduler.jitter
        diff = scheduling.diff_feeds(self.feeds, wanted, all_changed=jitter_changed)
        for feed in diff.removed:
            self.realtime.stop(feed.name)  # none unless realtime: its rows committed first
            try:
                self.scheduler.remove_job(feed.name)
            except JobLookupError:
                pass  # already gone: nothing to unschedule
            self.metrics.remove_feed(feed.name)
            log.info("feed.removed", feed=feed.name)
        for feed in diff.added:
            if not self._schedule(feed, new.scheduler.jitter, first_now=True):
                continue
            self.metrics.add_feed(feed.name)
            runs.seed_from_metadata(self.metrics, feed, *self._lake(new))
            log.info("feed.scheduled" if initial else "feed.added", feed=feed.name,
                     kind=feed.kind, source=feed.source,
                     schedule="realtime" if feed.realtime else str(feed.schedule))
        for feed in diff.changed:
            if self._schedule(feed, new.scheduler.jitter, first_now=False):
                log.info("feed.rescheduled", feed=feed.name,
                         schedule="realtime" if feed.realtime else str(feed.schedule))
        self._schedule_tiering(diff, new.scheduler.jitter)
        self._schedule_compaction(diff, new.scheduler.jitter)
        if new.lake != old.lake:
            for feed in wanted.values():
                runs.seed_from_metadata(self.metrics, feed, *self._lake(new))
        self.feeds = wanted
        states = [e.state for e in self.manager.list()]
        self.metrics.set_feed_counts(
            active=len(wanted), disabled=states.count("disabled"), archived=states.count("archived")
        )
        return diff

    def _schedule(self, feed: Feed, jitter: float, *, first_now: bool) -> bool:
        """Schedule one feed; a failure fails that feed (logged), never the daemon. A
        realtime feed gets its thread instead (a changed one: stopped, its rows committed,
        and started again as defined now); a feed switched back to batch loses its thread."""
        if feed.realtime:
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(feed.name)
            self.realtime.start(feed)
            return True
        self.realtime.stop(feed.name)
        now = utc_now()
        extra = {"next_run_time": now} if first_now and feed.schedule.every else {}
        try:
            if scheduling.never_fires(feed, now):
                log.warning("feed.never_runs", feed=feed.name, schedule=str(feed.schedule),
                            hint="no date matches this cron (e.g. 31 February): fix the cron")
            # Same job id on reschedule: APScheduler counts running instances per id, so the
            # replacement never runs while the old job's export is still going.
            self.scheduler.add_job(
                self.run_feed, scheduling.trigger_for(feed, jitter), args=[feed], id=feed.name,
                name=feed.name, max_instances=1, coalesce=True,
                misfire_grace_time=scheduling.misfire_grace(feed), replace_existing=True,
                **extra,
            )
        except Exception as exc:  # noqa: BLE001 - one feed's schedule must not stop the others
            log.error("feed.schedule_failed", feed=feed.name, schedule=str(feed.schedule),
                      reason=f"{type(exc).__name__}: {exc}",
                      hint="the feed does not run; fix its schedule and reload (SIGHUP)")
            self.metrics.runs.labels(feed=feed.name, result="failed").inc()
            return False
        return True

    def _status(self, note: str | None = None) -> str:
        text = f"{len(self.feeds)} feeds scheduled"
        return f"{text}; {note}" if note else text


def serve(config: Config) -> int:
    """``lakeexportd run``: the daemon under systemd (or a terminal) until SIGTERM/SIGINT."""
    return Daemon(config, notifier=Notifier.from_environ()).run()
