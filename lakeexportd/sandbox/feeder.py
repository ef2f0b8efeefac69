"""Feeds the catalog: historical preload, rows on demand, and live generation at a rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from lakeexportd.sandbox.catalog import Catalog
from lakeexportd.sandbox.generator import MS_PER_DAY, TransactionGenerator

Clock = Callable[[], float]


def now_ms(clock: Clock) -> int:
    return int(clock() * 1000)


class Feeder:
    """Owns the generator; every append goes through the catalog's lock."""

    def __init__(self, catalog: Catalog, generator: TransactionGenerator,
                 clock: Clock = time.time) -> None:
        self.catalog = catalog
        self.generator = generator
        self.clock = clock
        self._lock = asyncio.Lock()

    def preload(self, rows: int, days: float) -> int:
        """``rows`` historical rows spread over the last ``days`` days (ending 1 s ago)."""
        end = now_ms(self.clock) - 1_000
        return self.generate_between(rows, end - int(days * MS_PER_DAY), end)

    def generate_between(
        self, rows: int, start_ms: int, end_ms: int, batch: int = 10_000, *, inside: bool = False
    ) -> int:
        made = 0
        times = self.generator.times(start_ms, end_ms, rows, inside=inside)
        while made < rows:
            step = min(batch, rows - made)
            with self.catalog.lock:  # the generator's random state is shared: keep it in order
                made += self.catalog.append(
                    self.generator.make(next(times)) for _ in range(step)
                )
        return made

    def generate(self, rows: int, rowtime_ms: tuple[int, int] | None = None) -> int:
        """Append ``rows`` rows now (ROWTIME about now) or spread over ``rowtime_ms``."""
        if rowtime_ms is not None:
            return self.generate_between(rows, rowtime_ms[0], rowtime_ms[1], inside=True)
        now = now_ms(self.clock)
        return self.generate_between(rows, now, now + 1)

    async def run(self, rate: float, tick: float = 0.1) -> None:
        """Generate ``rate`` rows per second until cancelled; ROWTIME = wall clock at creation."""
        if rate <= 0:
            return
        owed = 0.0
        # Pace by real elapsed time even when tests pin the event-time clock.
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            current = time.monotonic()
            owed += (current - last) * rate
            last = current
            due = int(owed)
            if due:
                owed -= due
                self.generate(due)
