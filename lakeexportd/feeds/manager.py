"""``FeedManager``: the feed registry (DESIGN.md sections 3 and 8), the operator's view of feeds.

The YAML stays the declarative source; the registry in ``<lake>/feeds/active|archived/`` adds
what operators decide at run time. Each entry holds the feed's resolved definition, its
``origin`` (``config``: declared in the YAML; ``cli``: added with ``lakeexportd feeds add``),
its ``state`` (``active | disabled | archived``), when and why it changed, and a bounded history.

Rules:

- ``sync_from_config`` registers new YAML feeds, updates changed ones, archives ``config`` feeds
  that left the YAML (their data is kept; re-adding them with the same source resumes them) and
  never archives ``cli`` feeds. Reusing an archived (or cli) feed's name with another source or
  kind is a ``ConfigError``: the two sources would share one folder.
- An operator's enable/disable/archive of a config feed wins over the YAML's ``enabled`` until
  that feed's YAML entry changes: the entry keeps a fingerprint of the resolved YAML feed, and
  a different fingerprint at sync means the YAML was edited, so the YAML decides again.
- ``update`` changes only cli feeds (a config feed is changed in the YAML); source, kind and
  name never change (the lake folder would mix sources): add a new feed instead.
- ``delete`` removes a cli or archived feed's entry; ``purge=True`` also removes its
  ``streams|tables/<feed>/`` folder and table staging, under the feed's lock, nothing else.

The daemon needs two calls, and no pid file: the registry is re-read each time.

- at start and on SIGHUP, after loading the new config: ``FeedManager(root, now=clock)
  .sync_from_config(config)`` (a ``ConfigError`` there is an invalid reload: keep the old feeds);
- before each run and on SIGHUP: ``effective_feeds(config)``: the feeds to schedule now (all
  with ``enabled=True``). A feed the CLI disabled is skipped at its next tick; one it enabled or
  added is picked up at the next re-read.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from lakeexportd.config.model import Config, Feed
from lakeexportd.errors import ConfigError, FeedError
from lakeexportd.feeds.registry import (
    FeedEntry,
    FeedUsageError,
    RegistryFiles,
    State,
    UnknownFeed,
    check_name,
    feed_from_options,
    feed_options,
    fingerprint,
)
from lakeexportd.lake import layout
from lakeexportd.lake.locking import FeedLock
from lakeexportd.lake.metadata_model import iso_utc
from lakeexportd.lake.storage import Storage, open_storage

__all__ = ["FeedEntry", "FeedManager", "FeedUsageError", "SyncReport", "UnknownFeed"]

_FIXED = ("name", "source", "kind")


@dataclass
class SyncReport:
    """What one ``sync_from_config`` changed, by feed name."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.archived or self.restored)

    def lines(self) -> list[str]:
        return [f"{what} {', '.join(names)}" for what, names in
                (("added", self.added), ("updated", self.updated), ("archived", self.archived),
                 ("restored", self.restored)) if names]


def _yaml_state(feed: Feed) -> State:
    return "active" if feed.enabled else "disabled"


class _Writer(Protocol):
    def write(self, entry: FeedEntry) -> Any: ...


class _DryRun:
    """Stands in for the registry's files when a sync must change nothing."""

    def write(self, entry: FeedEntry) -> None:
        pass


class FeedManager:
    """Owns ``<lake_root>/feeds/``; ``now`` is the clock (the CLI and daemon pass theirs)."""

    def __init__(self, lake_root: Path, *, now: Callable[[], dt.datetime],
                 lock_wait: float = 10.0, storage: Storage | None = None) -> None:
        self.root = lake_root
        self.storage = storage or open_storage(lake_root)
        self.files = RegistryFiles(lake_root, self.storage)
        self._now = now
        self.lock_wait = lock_wait

    def _stamp(self) -> str:
        return iso_utc(self._now())

    # -- reading -------------------------------------------------------------------------------

    def get(self, name: str) -> FeedEntry:
        entry = self.files.read(check_name(name))
        if entry is None:
            known = ", ".join(self.files.names()) or "(none)"
            raise UnknownFeed(f"unknown feed {name!r} in the registry {self.files.base}; "
                              f"registered feeds: {known}")
        return entry

    def list(self, state: State | None = None) -> builtins.list[FeedEntry]:
        entries = [e for e in (self.files.read(n) for n in self.files.names()) if e is not None]
        return [e for e in entries if state is None or e.state == state]

    # -- operator actions ----------------------------------------------------------------------

    def add(self, feed: Feed, reason: str = "") -> FeedEntry:
        """Register a feed added from the CLI (origin ``cli``), active unless not ``enabled``."""
        check_name(feed.name)
        feed_from_options(feed_options(feed), where="the new feed")  # same checks as the YAML
        with self.files.locked():
            existing = self.files.read(feed.name)
            if existing is not None:
                raise FeedError(
                    f"feed {feed.name!r} is already registered ({existing.origin}, "
                    f"{existing.state}); choose another name, or use `lakeexportd feeds "
                    "update/restore`")
            state: State = "active" if feed.enabled else "disabled"
            entry = FeedEntry(feed=replace(feed, enabled=True), origin="cli", state=state,
                              changed="", reason="")
            return self.files.write(entry.moved(state, reason or "added", self._stamp(),
                                                "operator"))

    def update(self, name: str, reason: str = "", **changes: Any) -> FeedEntry:
        """Change settings of a cli feed (values as ``Feed`` holds them)."""
        with self.files.locked():
            entry = self.get(name)
            if entry.origin == "config":
                raise FeedError(f"feed {name!r} is declared in the configuration file: change "
                                "its entry there and reload the daemon (systemctl reload "
                                "lakeexportd)")
            fixed = [k for k in _FIXED if k in changes and changes[k] != getattr(entry.feed, k)]
            if fixed:
                raise FeedError(f"feed {name!r}: {', '.join(fixed)} cannot change (the lake "
                                "folder would mix sources); add a new feed instead")
            try:
                new = replace(entry.feed, **changes)
            except TypeError as exc:
                raise FeedUsageError(f"feed {name!r}: {exc}") from exc
            new = feed_from_options(feed_options(new), where=f"feed {name!r}")
            text = reason or "updated: " + ", ".join(sorted(changes))
            return self.files.write(entry.moved(entry.state, text, self._stamp(), "operator",
                                                feed=new))

    def enable(self, name: str, reason: str = "") -> FeedEntry:
        return self._set(name, "active", reason or "enabled")

    def disable(self, name: str, reason: str = "") -> FeedEntry:
        return self._set(name, "disabled", reason or "disabled")

    def archive(self, name: str, reason: str = "") -> FeedEntry:
        return self._set(name, "archived", reason or "archived")

    def _set(self, name: str, state: State, reason: str) -> FeedEntry:
        with self.files.locked():
            entry = self.get(name)
            if entry.state == "archived" and state != "archived":
                raise FeedError(f"feed {name!r} is archived: `lakeexportd feeds restore {name}` "
                                "first")
            override = state if entry.origin == "config" else None
            return self.files.write(entry.moved(state, reason, self._stamp(), "operator",
                                                override=override))

    def restore(self, name: str, reason: str = "") -> FeedEntry:
        """Bring an archived feed back. A config feed that left the YAML becomes a cli feed."""
        with self.files.locked():
            entry = self.get(name)
            if entry.state != "archived":
                raise FeedError(f"feed {name!r} is not archived (it is {entry.state})")
            if entry.origin == "config" and entry.override == "archived":
                state = _yaml_state(entry.feed)  # archived by the operator: the YAML decides
                return self.files.write(entry.moved(state, reason or "restored", self._stamp(),
                                                    "operator", override=None))
            text = reason or ("restored; no longer in the config file, so it is now managed "
                              "with `lakeexportd feeds`" if entry.origin == "config"
                              else "restored")
            return self.files.write(entry.moved(
                "active", text, self._stamp(), "operator", origin="cli", override=None,
                fingerprint=None, feed=replace(entry.feed, enabled=True)))

    def delete(self, name: str, purge: bool = False) -> builtins.list[Path]:
        """Remove the entry; with ``purge`` also the feed's data. Returns the removed folders."""
        with self.files.locked():
            entry = self.get(name)
            if entry.origin == "config" and entry.state != "archived":
                raise FeedError(f"feed {name!r} is declared in the configuration file: remove "
                                "it there and run `lakeexportd feeds sync` (it is archived), or "
                                f"`lakeexportd feeds archive {name}` first")
            removed = self._purge(entry.feed) if purge else []
            self.files.remove(name)
            return removed

    def _purge(self, feed: Feed) -> builtins.list[Path]:
        feed_dir = layout.feed_dir(self.root, feed.kind, feed.name)
        staging = layout.staging_dir(self.root, feed.name)
        targets = []
        for path in (feed_dir, staging):
            entry = next((e for e in self.storage.list_dir(path.parent) if e.name == path.name),
                         None)
            if entry is None:
                continue
            if not entry.is_dir:  # a symlink (or a file): never deleted through
                raise FeedError(f"{path} is not a folder (a symlink?); remove it by hand")
            self.storage.check_inside(self.root, path)
            targets.append(path)
        if not targets:
            return []
        # The export lock makes a running export finish first; the lock file goes with the folder.
        with FeedLock(feed_dir, feed=feed.name, wait=self.lock_wait, storage=self.storage):
            for path in targets:
                self.storage.delete_tree(path)
        return targets

    # -- the configuration ---------------------------------------------------------------------

    def sync_from_config(self, config: Config, *, dry_run: bool = False) -> SyncReport:
        """Make the registry agree with ``config`` (see the module docstring for the rules).

        ``dry_run`` only reports what a sync would change: commands that look (``feeds list``,
        ``show``) use it, since applying a YAML the daemon has not reloaded yet would stop or
        archive feeds behind its back.
        """
        if dry_run:
            return self._sync(config, _DryRun())
        with self.files.locked():
            return self._sync(config, self.files)

    def _sync(self, config: Config, files: _Writer) -> SyncReport:
        report = SyncReport()
        where = str(config.path)
        entries = {e.name: e for e in self.list()}
        for index, feed in enumerate(config.feeds):
            entry = entries.get(feed.name)
            self._check_reuse(config, index, feed, entry)
            stamp, mark = self._stamp(), fingerprint(feed)
            if entry is None:
                new = FeedEntry(feed=feed, origin="config", state="active", changed="",
                                reason="", fingerprint=mark)
                files.write(new.moved(_yaml_state(feed), f"added to {where}", stamp, "config"))
                report.added.append(feed.name)
            elif entry.origin == "cli" or entry.fingerprint != mark:
                text = f"now declared in {where}" if entry.origin == "cli" else \
                    f"entry changed in {where}"
                files.write(entry.moved(_yaml_state(feed), text, stamp, "config",
                                        feed=feed, origin="config", override=None,
                                        fingerprint=mark))
                report.updated.append(feed.name)
            elif entry.state == "archived" and entry.override is None:
                files.write(entry.moved(_yaml_state(feed), f"back in {where}", stamp, "config"))
                report.restored.append(feed.name)
            else:
                report.unchanged.append(feed.name)
        declared = {f.name for f in config.feeds}
        for entry in entries.values():
            if entry.origin == "config" and entry.name not in declared \
                    and entry.state != "archived":
                files.write(entry.moved("archived", f"removed from {where}; data kept",
                                        self._stamp(), "config", override=None))
                report.archived.append(entry.name)
        return report

    def _check_reuse(self, config: Config, index: int, feed: Feed,
                     entry: FeedEntry | None) -> None:
        if entry is None or (entry.origin == "config" and entry.state != "archived"):
            return
        if (entry.feed.source, entry.feed.kind) == (feed.source, feed.kind):
            return
        what = "an archived feed" if entry.state == "archived" else "a feed added with the CLI"
        raise ConfigError(
            f"{config.path}: $.feeds[{index}].source (feed {feed.name!r}): the name belongs to "
            f"{what} of {entry.feed.kind} {entry.feed.source} (its data is kept under "
            f"{layout.feed_dir(self.root, entry.feed.kind, feed.name)}); using it for "
            f"{feed.kind} {feed.source} would mix two sources: choose another name, or run "
            f"`lakeexportd feeds delete {feed.name} --purge` first"
        )

    def known_feeds(self, config: Config) -> dict[str, tuple[Feed, State]]:
        """Every feed the YAML or the registry knows, with the state it runs in now.

        The one notion of "the feeds" for every command: YAML feeds (state from the registry
        unless the YAML changed or is not synced yet) and feeds added with ``feeds add``.
        """
        active = {f.name for f in self.effective_feeds(config)}
        entries = {e.name: e for e in self.list()}
        out: dict[str, tuple[Feed, State]] = {}
        for feed in config.feeds:
            entry = entries.get(feed.name)
            state: State = "active" if feed.name in active else (
                entry.state if entry is not None and entry.state != "active" else "disabled")
            out[feed.name] = (feed, state)
        for entry in entries.values():
            if entry.name not in out:
                out[entry.name] = (entry.feed, "active" if entry.name in active else entry.state)
        return out

    def effective_feeds(self, config: Config) -> builtins.list[Feed]:
        """The feeds to schedule now: YAML and cli feeds minus disabled and archived ones."""
        entries = {e.name: e for e in self.list()}
        out: builtins.list[Feed] = []
        for feed in config.feeds:
            entry = entries.get(feed.name)
            if entry is not None and (entry.origin == "cli" or entry.state == "archived") \
                    and (entry.feed.source, entry.feed.kind) != (feed.source, feed.kind):
                continue  # a name conflict sync refuses: never export into the other's folder
            if entry is not None and entry.origin == "config" \
                    and entry.fingerprint == fingerprint(feed):
                state = entry.state
            else:
                state = _yaml_state(feed)  # not synced yet, or the YAML changed: YAML decides
            if state == "active":
                out.append(replace(feed, enabled=True))
        declared = {f.name for f in config.feeds}
        out += [replace(e.feed, enabled=True) for e in entries.values()
                if e.origin == "cli" and e.state == "active" and e.name not in declared]
        return out
