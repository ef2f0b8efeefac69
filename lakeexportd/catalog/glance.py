"""Each feed's table against the lake, in one word and within the catalog's timeout.

``catalog list``, ``metadata list|show`` and ``status`` show a feed as ``level``, ``behind: 2
missing, 1 extra``, ``not registered`` or ``refused: <why>``, and never fail for the catalog:
one that does not answer within ``catalog.timeout`` (or refuses the connection) shows as
``catalog unreachable: <reason>`` and the command goes on. The catalog is asked from one worker
thread, feed after feed; once it misses the deadline for a feed, the remaining feeds are not
asked (they would each wait as long). Read-only: ``LakeCatalog.state`` changes nothing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from lakeexportd.catalog.iceberg import CatalogState, LakeCatalog
from lakeexportd.config.model import Feed
from lakeexportd.errors import CatalogError, LakeExportError


@dataclass(frozen=True)
class Glance:
    """One feed's table as the catalog answered (``state``), or why it could not."""

    feed: str
    table: str
    state: CatalogState | None = None
    refused: str | None = None  # not registered, and the catalog would refuse it: why
    error: str | None = None  # ``catalog unreachable: ...`` or ``lake unreadable: ...``
    # No answer within the deadline: the worker may still hold the catalog's open guard, so
    # the caller must not ``close()`` it (that would wait for the hung call).
    timed_out: bool = False

    @property
    def level(self) -> bool | None:
        """True level, False behind or not registered though the lake has files, None unknown."""
        if self.state is None or self.error is not None:
            return None
        return self.state.level

    @property
    def shown(self) -> str:
        state = self.state
        if self.error is not None:
            return self.error
        if self.refused is not None:
            return f"refused: {self.refused}"
        if state is None:
            return "unknown"
        if not state.exists:
            return "not registered" + (f" ({len(state.missing)} files in the lake)"
                                       if state.missing else " (no data file yet)")
        if state.level:
            return "level"
        parts = [f"{len(state.missing)} missing", f"{len(state.extra)} extra"]
        if state.version != state.lake_version:
            parts.append(f"version {state.version} of {state.lake_version}")
        return "behind: " + ", ".join(parts)


def glance(catalog: LakeCatalog, feed: Feed) -> Glance:
    """The feed's table against the lake, now (no deadline: ``glance_all`` adds one)."""
    table = catalog.name(feed)
    try:
        state = catalog.state(feed)
        refused = catalog.refusal(feed) if not state.exists and state.missing else None
    except CatalogError as exc:
        return Glance(feed.name, table, error=f"catalog unreachable: {exc}")
    except (LakeExportError, OSError) as exc:
        return Glance(feed.name, table, error=f"lake unreadable: {exc}")
    return Glance(feed.name, table, state, refused=refused)


def glance_all(catalog: LakeCatalog, feeds: Sequence[Feed],
               timeout: float | None = None) -> dict[str, Glance]:
    """``glance`` for each feed, waiting at most ``timeout`` (default ``catalog.timeout``)
    seconds for each answer; a catalog that cannot be opened answers every feed at once."""
    wait = catalog.settings.timeout if timeout is None else timeout
    answers: queue.SimpleQueue[Glance] = queue.SimpleQueue()

    def work() -> None:
        try:
            catalog.catalog()
        except CatalogError as exc:
            for feed in feeds:
                answers.put(Glance(feed.name, catalog.name(feed),
                                   error=f"catalog unreachable: {exc}"))
            return
        for feed in feeds:
            answers.put(glance(catalog, feed))

    threading.Thread(target=work, name="catalog-glance", daemon=True).start()
    found: dict[str, Glance] = {}
    for _ in feeds:
        try:
            answer = answers.get(timeout=wait)
        except queue.Empty:
            reason = (f"catalog unreachable: {catalog.where} gave no answer within {wait:g}s "
                      "(catalog.timeout)")
            for rest in feeds:
                found.setdefault(rest.name, Glance(rest.name, catalog.name(rest), error=reason,
                                                   timed_out=True))
            break
        found[answer.feed] = answer
    return found


def close_unless_hung(catalog: LakeCatalog, glances: dict[str, Glance]) -> None:
    """Close the catalog, unless a call into it is still hanging in the worker thread (then
    the process's exit ends it)."""
    if not any(g.timed_out for g in glances.values()):
        catalog.close()
