"""The feed registry's files: one JSON document per feed in ``<lake>/feeds/active|archived/``.

``FeedManager`` (feeds.py) decides what changes; this module only encodes, decodes, reads and
writes entries. A feed's definition is stored in the YAML's own form (durations as ``30s``,
``schedule: {every: 1m}`` or ``{cron: ...}``) and read back through the YAML validator, so a
hand-edited entry is checked exactly like the configuration file. Every file access goes
through the lake's storage seam: writes are atomic (``Storage.publish``), a file that cannot be
read is reported and never overwritten, and mutations hold ``feeds/.lock`` (the one lock
helper, ``lake.locking.Lock``) so the CLI and the daemon never interleave read-modify-write
cycles.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final, Literal

from lakeexportd.config import build as config_build
from lakeexportd.config.durations import format_duration
from lakeexportd.config.model import BUILTIN, FEED_NAME, Feed, FeedDefaults, Tiering
from lakeexportd.config.reader import Node
from lakeexportd.config.sizes import format_size
from lakeexportd.errors import EX_USAGE, ConfigError, FeedError, LakeStateError, store_error
from lakeexportd.lake import layout
from lakeexportd.lake.locking import Lock
from lakeexportd.lake.storage import LOCAL, Storage

FORMAT_VERSION: Final = 1
KEEP_HISTORY: Final = 50
DIR_MODE: Final = 0o750
FILE_MODE: Final = 0o640

Origin = Literal["config", "cli"]
State = Literal["active", "disabled", "archived"]
ORIGINS: Final = ("config", "cli")
STATES: Final = ("active", "disabled", "archived")
_DURATIONS: Final = ("settle_delay",)


class FeedUsageError(FeedError):
    """The operator named a feed that cannot be used (bad name, unknown): a usage error."""

    exit_code = EX_USAGE


class UnknownFeed(FeedUsageError):
    """No registry entry has this name."""


def check_name(name: str) -> str:
    """``name`` if it follows the config's feed-name rule (it becomes a file name), else raise."""
    if not FEED_NAME.fullmatch(name):
        raise FeedUsageError(
            f"{name!r} is not a feed name: use 1-63 characters, a lowercase letter first, then "
            "lowercase letters, digits or _ (no '/', '.' or '..')"
        )
    return name


@dataclass(frozen=True)
class Change:
    """One state change in an entry's bounded ``history``."""

    at: str
    state: State
    reason: str
    by: Literal["config", "operator"]


@dataclass(frozen=True)
class FeedEntry:
    """A feed as the registry holds it."""

    feed: Feed
    origin: Origin
    state: State
    changed: str
    reason: str
    # Config feeds: the operator's enable/disable/archive, which wins over the YAML's
    # `enabled` until the YAML entry's fingerprint changes.
    override: State | None = None
    fingerprint: str | None = None
    history: tuple[Change, ...] = ()
    seq: int = 0  # bumped by every write: picks the newer file if a move was interrupted

    @property
    def name(self) -> str:
        return self.feed.name

    def moved(self, state: State, reason: str, at: str, by: Literal["config", "operator"],
              **other: Any) -> FeedEntry:
        """This entry in ``state`` (history appended), with ``other`` fields replaced."""
        history = (*self.history, Change(at, state, reason, by))[-KEEP_HISTORY:]
        return replace(self, state=state, reason=reason, changed=at, history=history, **other)


# -- definitions -------------------------------------------------------------------------------


def feed_options(feed: Feed) -> dict[str, Any]:
    """``feed`` in the YAML's form; keys that do not apply to its kind are left out."""
    skip = config_build.TABLE_ONLY if feed.kind == "stream" else config_build.STREAM_ONLY
    out: dict[str, Any] = {"name": feed.name, "source": feed.source, "kind": feed.kind}
    schedule = feed.schedule
    if not feed.realtime:  # a realtime feed has no schedule (its query runs all the time)
        out["schedule"] = ({"every": format_duration(schedule.every)}
                           if schedule.every is not None else {"cron": schedule.cron})
    for f in fields(Feed):
        if f.name in out or f.name in skip or f.name == "schedule":
            continue
        value = getattr(feed, f.name)
        if f.name == "compaction":
            # Left out when it is the built-in default, so entries written before compaction
            # existed keep their fingerprint; ``null`` (off) must be written to read back.
            if value != BUILTIN.compaction:
                out[f.name] = None if value is None else {
                    "after": f"{value.after_days}d",
                    "target_file_size": format_size(value.target_file_size)}
            continue
        if f.name == "mode":  # left out for batch feeds (as before realtime existed)
            if feed.realtime:
                out["mode"] = "realtime"
            continue
        if f.name == "rotate":
            if feed.realtime:
                out["rotate"] = {"rows": value.rows, "bytes": format_size(value.bytes),
                                 "age": format_duration(value.age),
                                 "idle": format_duration(value.idle)}
            continue
        if value is None or value == ():  # unset owner/description, no tags: as before them
            continue
        if f.name == "catalogued":  # YAML `catalog: false`; left out when on (as before it)
            if not value:
                out["catalog"] = False
            continue
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, Tiering):
            value = {"after": f"{value.after_days}d", "class": value.storage_class}
        out[f.name] = format_duration(value) if f.name in _DURATIONS else value
    return out


def feed_from_options(options: Mapping[str, Any], *, where: str,
                      defaults: FeedDefaults = BUILTIN) -> Feed:
    """A ``Feed`` from YAML-form options, validated like a YAML entry (``ConfigError``)."""
    return config_build.build_feed(Node(dict(options), "$", where), defaults)


def fingerprint(feed: Feed) -> str:
    """A short digest of a resolved feed: it changes whenever its YAML entry's effect does."""
    text = json.dumps(feed_options(feed), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- JSON codec --------------------------------------------------------------------------------


def to_json(entry: FeedEntry) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION, "seq": entry.seq, "feed": entry.name,
        "origin": entry.origin, "state": entry.state, "changed": entry.changed,
        "reason": entry.reason, "override": entry.override, "fingerprint": entry.fingerprint,
        "definition": feed_options(entry.feed),
        "history": [{"at": c.at, "state": c.state, "reason": c.reason, "by": c.by}
                    for c in entry.history],
    }


def _field(raw: dict[str, Any], key: str, kind: type, *, null: bool = False,
           choices: tuple[str, ...] = ()) -> Any:
    if key not in raw:
        raise ValueError(f"key {key!r} is missing")
    value = raw[key]
    if value is None and null:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ValueError(f"{key!r} has the wrong type ({type(value).__name__})")
    if choices and value not in choices:
        raise ValueError(f"{key!r} is {value!r}, expected one of {', '.join(choices)}")
    return value


def from_json(raw: Any, *, where: str) -> FeedEntry:
    """Decode an entry; any problem is a ``ValueError`` saying which key."""
    if not isinstance(raw, dict):
        raise ValueError("the document is not a JSON object")
    if _field(raw, "format_version", int) != FORMAT_VERSION:
        raise ValueError(f"format_version is {raw['format_version']}, expected {FORMAT_VERSION}")
    definition = _field(raw, "definition", dict)
    try:
        feed = feed_from_options(definition, where=f"{where}: definition")
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    if feed.name != _field(raw, "feed", str):
        raise ValueError(f"'feed' is {raw['feed']!r} but the definition names {feed.name!r}")
    history = []
    for item in _field(raw, "history", list):
        if not isinstance(item, dict):
            raise ValueError("a 'history' item is not an object")
        history.append(Change(_field(item, "at", str), _field(item, "state", str, choices=STATES),
                              _field(item, "reason", str),
                              _field(item, "by", str, choices=("config", "operator"))))
    return FeedEntry(
        feed=feed,
        origin=_field(raw, "origin", str, choices=ORIGINS),
        state=_field(raw, "state", str, choices=STATES),
        changed=_field(raw, "changed", str),
        reason=_field(raw, "reason", str),
        override=_field(raw, "override", str, null=True, choices=STATES),
        fingerprint=_field(raw, "fingerprint", str, null=True),
        history=tuple(history),
        seq=_field(raw, "seq", int),
    )


# -- files -------------------------------------------------------------------------------------



class RegistryFiles:
    """Reads and atomically writes ``<root>/feeds/{active,archived}/<feed>.json``."""

    def __init__(self, lake_root: Path, storage: Storage = LOCAL) -> None:
        self.storage = storage
        self.base = lake_root / "feeds"
        self.active = self.base / "active"
        self.archived = self.base / "archived"

    def path(self, name: str, state: State) -> Path:
        return (self.archived if state == "archived" else self.active) / f"{check_name(name)}.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold ``feeds/.lock`` (``_lease.json`` on object stores) for one read-modify-write
        (waiting as long as it takes)."""
        self._ensure_dirs()

        def busy(holder: str) -> Exception:  # never raised: the wait has no end
            return LakeStateError(f"the feed registry is locked{holder}")

        with Lock(layout.lock_path(self.base, lease=self.storage.leases), wait=None, busy=busy,
                  storage=self.storage, file_mode=FILE_MODE, dir_mode=DIR_MODE):
            yield

    def _ensure_dirs(self) -> None:
        try:
            for directory in (self.active, self.archived):
                if not self.storage.is_dir(directory):
                    self.storage.make_dirs(directory, DIR_MODE)
        except OSError as exc:
            raise LakeStateError(
                f"cannot create the feed registry {self.storage.show(self.base)}: {exc}"
            ) from exc

    def _read_file(self, path: Path) -> FeedEntry | None:
        try:
            data = self.storage.read_bytes(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LakeStateError(f"cannot read registry file {path}: {exc}") from exc
        try:
            entry = from_json(json.loads(data), where=str(path))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
            raise LakeStateError(
                f"registry file {path} cannot be used ({exc}); lakeexportd will not overwrite "
                f"it. Fix it by hand (it is JSON; compare with a sibling file), or move it aside "
                f"(mv {path} {path}.broken) and run `lakeexportd feeds sync`: a feed from the "
                "config file is registered again (operator enable/disable lost), a feed added "
                "with the CLI must be added again"
            ) from exc
        expected = "archived" if path.parent == self.archived else ("active", "disabled")
        if entry.state not in expected:
            raise LakeStateError(
                f"registry file {path} says state {entry.state!r}, which does not belong in "
                f"{path.parent.name}/; move the file to the other folder or fix its 'state'"
            )
        return entry

    def read(self, name: str) -> FeedEntry | None:
        """The entry of ``name``, or None; if an interrupted move left two, the newer."""
        found = [e for e in (self._read_file(self.path(name, s)) for s in ("active", "archived"))
                 if e is not None]
        return max(found, key=lambda e: e.seq) if found else None

    def names(self) -> list[str]:
        names: set[str] = set()
        for directory in (self.active, self.archived):
            try:
                listed = self.storage.list_dir(directory)
            except OSError as exc:
                raise store_error(
                    f"cannot list the feed registry {self.storage.show(directory)}", exc
                ) from exc
            names.update(e.path.stem for e in listed
                         if not e.is_dir and e.name.endswith(".json")
                         and FEED_NAME.fullmatch(e.path.stem))
        return sorted(names)

    def write(self, entry: FeedEntry) -> FeedEntry:
        """Atomically store ``entry`` (seq bumped) and remove its file in the other folder."""
        self._ensure_dirs()
        entry = replace(entry, seq=entry.seq + 1)
        path = self.path(entry.name, entry.state)
        data = (json.dumps(to_json(entry), indent=2) + "\n").encode()
        try:
            self.storage.publish(path, data, file_mode=FILE_MODE)
            other = self.path(entry.name, "active" if entry.state == "archived" else "archived")
            if self.storage.delete(other):
                self.storage.sync([other.parent])
        except OSError as exc:
            raise LakeStateError(f"could not write registry file {path}: {exc}") from exc
        return entry

    def remove(self, name: str) -> None:
        for state in ("active", "archived"):
            path = self.path(name, state)
            try:
                if self.storage.delete(path):
                    self.storage.sync([path.parent])
            except OSError as exc:
                raise LakeStateError(f"could not remove registry file {path}: {exc}") from exc
