"""Pure scheduling decisions: a feed's trigger, and what a reload changes.

``trigger_for`` turns a feed's ``schedule`` into an APScheduler trigger (cron in UTC);
``diff_feeds`` compares the active feeds of two configurations by value (``Feed`` is frozen
and comparable), so a reload touches only the feeds whose resolved settings changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from lakeexportd.config.model import Config, Feed

# A cron run delayed (host suspended, scheduler thread starved) by up to this much still
# runs; coalescing makes several missed ticks one run.
CRON_MISFIRE_GRACE = 300


def trigger_for(feed: Feed, jitter: float) -> BaseTrigger:
    """The trigger of ``feed``'s schedule, with up to ``jitter`` seconds of random delay."""
    jitter_s = jitter or None
    if feed.schedule.every is not None:
        return IntervalTrigger(seconds=feed.schedule.every, jitter=jitter_s, timezone=dt.UTC)
    assert feed.schedule.cron is not None  # config guarantees one of the two
    trigger = CronTrigger.from_crontab(feed.schedule.cron, timezone="UTC")
    trigger.jitter = jitter_s  # from_crontab takes no jitter argument
    return trigger


def never_fires(feed: Feed, now: dt.datetime) -> bool:
    """Whether a cron schedule names no date that exists (``0 0 31 2 *``): the feed never runs."""
    if feed.schedule.cron is None:
        return False
    trigger = CronTrigger.from_crontab(feed.schedule.cron, timezone="UTC")
    return trigger.get_next_fire_time(None, now) is None


def misfire_grace(feed: Feed) -> int:
    """How late a run may start and still run: one period for intervals (at least 1 s)."""
    if feed.schedule.every is not None:
        return max(1, int(feed.schedule.every))
    return CRON_MISFIRE_GRACE


def active(feeds: Iterable[Feed]) -> dict[str, Feed]:
    """The feeds that get a job: the enabled ones, by name."""
    return {feed.name: feed for feed in feeds if feed.enabled}


@dataclass(frozen=True)
class FeedDiff:
    added: tuple[Feed, ...]
    changed: tuple[Feed, ...]
    removed: tuple[Feed, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)


def diff_feeds(
    old: dict[str, Feed], new: dict[str, Feed], *, all_changed: bool = False
) -> FeedDiff:
    """What to add, reschedule and remove to go from ``old`` to ``new`` (active feeds by name).

    ``all_changed`` marks every kept feed changed (the scheduler's jitter changed).
    """
    kept = [name for name in new if name in old]
    return FeedDiff(
        added=tuple(new[name] for name in new if name not in old),
        changed=tuple(new[name] for name in kept if all_changed or new[name] != old[name]),
        removed=tuple(old[name] for name in old if name not in new),
    )


def restart_needed(old: Config, new: Config) -> list[str]:
    """Settings a reload does not apply (the listener, the pool, the log files)."""
    keys = []
    if old.metrics != new.metrics:
        keys.append("metrics.listen")
    if old.scheduler.workers != new.scheduler.workers:
        keys.append("scheduler.workers")
    if old.logging != new.logging:
        keys.append("logging")
    return keys

