"""``lakeexportd catalog``'s work (``cli/catalog.py`` declares the command): imported only when
the command runs, so no other command pays for pyiceberg's import (about 1.3 s)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from lakeexportd.audit.text_table import render
from lakeexportd.catalog import tables
from lakeexportd.catalog.catchup import CatchUp, sync_locked
from lakeexportd.catalog.glance import Glance, close_unless_hung, glance_all
from lakeexportd.catalog.iceberg import LakeCatalog
from lakeexportd.catalog.policy import in_catalog, left_out
from lakeexportd.cli.catalog_states import long_states, state_cell
from lakeexportd.cli.export import _known, each_feed
from lakeexportd.cli.options import ProgressLine, count
from lakeexportd.config.load import default_config_path, load_config
from lakeexportd.config.model import Config, Feed, Schedule
from lakeexportd.errors import (
    EX_FAILED,
    EX_OK,
    EX_TEMPFAIL,
    EX_USAGE,
    CatalogError,
    ConfigError,
)
from lakeexportd.lake.configured import lake_of

LEVELS = ("raw", "anonymized", "aggregated")


class _Usage(Exception):
    """A feed argument that names no Parquet feed (exit 2)."""


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config or default_config_path())
    if config.catalog is None:
        raise ConfigError(
            f"{config.path} has no `catalog:` section, so no feed is registered in a catalog: "
            "add e.g. `catalog: {type: sql, uri: sqlite:///catalog.db}` (README, Data "
            "catalogue) and run `lakeexportd catalog sync`")
    catalog = LakeCatalog(config.catalog, lake_of(config.lake))
    glances: dict[str, Glance] = {}
    try:
        if args.action == "list":
            return _list(catalog, _parquet_feeds(config), args.json, glances)
        if args.action == "sync":
            feeds = [_feed(config, args.feed)] if args.feed else _parquet_feeds(config)
            return _sync(catalog, feeds, config.scheduler.lock_wait)
        if args.action == "show":
            return _show(catalog, _feed(config, args.feed), args.json, glances)
        return _drop(catalog, _drop_target(catalog, config, args.feed), args.yes)
    except _Usage as exc:
        print(f"lakeexportd catalog {args.action}: {exc}", file=sys.stderr)
        return EX_USAGE
    finally:
        close_unless_hung(catalog, glances)


def _parquet_feeds(config: Config) -> list[Feed]:
    """Every feed of the YAML and the registry (any state) that is catalogued."""
    return [feed for feed, _ in _known(config).values() if in_catalog(feed)]


def _feed(config: Config, name: str) -> Feed:
    known = _known(config)
    if name not in known:
        raise _Usage(f"unknown feed {name!r} in {config.path} and the feed registry; known "
                     f"feeds: {', '.join(sorted(known)) or '(none)'}")
    feed = known[name][0]
    if (why := left_out(feed)) is not None:
        raise _Usage(why)
    return feed


# -- list ------------------------------------------------------------------------------------

def _list(catalog: LakeCatalog, feeds: list[Feed], as_json: bool,
          glances: dict[str, Glance]) -> int:
    glances.update(glance_all(catalog, feeds))
    rows = [_glance_json(glances[feed.name]) for feed in feeds]
    unreachable = any(g.error and g.error.startswith("catalog unreachable")
                      for g in glances.values())
    orphans = [] if unreachable else _unowned(catalog, feeds)
    if as_json:
        print(json.dumps({"catalog": catalog.where, "feeds": rows,
                          "unconfigured_tables": orphans}, indent=2))
    else:
        print(f"{catalog.where}, namespace {catalog.settings.namespace}")
        print(render(("FEED", "TABLE", "STATE", "SNAPSHOT", "SNAPSHOT TIME", "FILES", "ROWS"),
                     [(r["feed"], r["table"], state_cell(r), r["snapshot_id"],
                       r["snapshot_time"], r["files"] if r["exists"] else None,
                       f"{r['records']:,}" if r["exists"] else None) for r in rows],
                     right=("FILES", "ROWS")))
        for line in long_states({r["feed"]: r["state"] for r in rows}):
            print(line)
        for table in orphans:
            name = table.rsplit(".", 1)[1]
            print(f"{table}: in the catalog, but no configured feed owns it "
                  f"(`lakeexportd catalog drop {name}` removes it; the lake is not touched)")
    if unreachable:
        return EX_TEMPFAIL
    return EX_FAILED if any(g.error for g in glances.values()) else EX_OK


def _glance_json(g: Glance) -> dict[str, Any]:
    state = g.state
    return {
        "feed": g.feed, "table": g.table, "state": g.shown, "level": g.level,
        "exists": bool(state and state.exists),
        "snapshot_id": state.snapshot_id if state else None,
        "snapshot_time": tables.iso_ms(int(state.snapshot_time.timestamp() * 1000))
        if state and state.snapshot_time else None,
        "files": state.files if state else 0, "records": state.records if state else 0,
        "missing": list(state.missing) if state else [],
        "extra": list(state.extra) if state else [],
        "version": state.version if state else None,
        "lake_version": state.lake_version if state else None,
        "refused": g.refused, "error": g.error,
    }


def _unowned(catalog: LakeCatalog, feeds: list[Feed]) -> list[str]:
    """Tables in lakeexportd's namespaces that no configured Parquet feed owns."""
    owned = {catalog.identifier(feed) for feed in feeds}
    try:
        found = catalog.tables()
    except CatalogError:  # the rows above already say why the catalog failed
        return []
    return [".".join(ident) for ident in found if ident not in owned]


# -- show ------------------------------------------------------------------------------------

def _show(catalog: LakeCatalog, feed: Feed, as_json: bool, glances: dict[str, Glance]) -> int:
    glances.update(glance_all(catalog, [feed]))
    g = glances[feed.name]
    if g.error and g.error.startswith("catalog unreachable"):
        print(f"lakeexportd catalog show: {g.error}", file=sys.stderr)
        return EX_TEMPFAIL
    found = tables.read(catalog, feed) if g.state is not None and g.state.exists else None
    if as_json:
        shown = dataclasses.asdict(found[0]) if found else None
        print(json.dumps({"catalog": catalog.where, **_glance_json(g), "view": shown}, indent=2))
        return EX_OK if found else EX_FAILED
    print(f"{'table:':<18}{g.table} ({catalog.where})")
    print(f"{'state:':<18}{g.shown}")
    if found is None:
        if g.error is None and g.refused is None:
            print(f"`lakeexportd catalog sync {feed.name}` registers it")
        return EX_FAILED
    view, _ = found
    props = view.properties
    for label, value in (("location:", view.location), ("metadata:", view.metadata_location),
                         ("format version:", view.format_version),
                         ("description:", props.get("comment") or "-"),
                         ("owner:", props.get("owner") or "-"),
                         ("tags:", props.get("lakeexportd.tags", "").replace(",", ", ") or "-"),
                         ("partitioning:", ", ".join(view.partitioning) or "none")):
        print(f"{label:<18}{value}")
    if g.state is not None:
        _print_state(g)
    print("schema:")
    print(_indent(render(("ID", "COLUMN", "REQUIRED", "TYPE"),
                         [(c.id, c.name, "yes" if c.required else "", c.type)
                          for c in view.columns], right=("ID",))))
    print("properties:")
    for key, value in props.items():
        if key != tables.NAME_MAPPING:
            print(f"  {key} = {value}")
    print(f"  {tables.NAME_MAPPING} = (columns by name; --json shows it)")
    print("snapshots:")
    print(_indent(render(("SNAPSHOT", "TIME", "OPERATION", "ADDED", "REMOVED", "ROWS", "VERSION",
                          "CURRENT"),
                         [(s.snapshot_id, s.time, s.operation, s.added_files, s.removed_files,
                           f"{s.records:,}" if s.records is not None else None,
                           f"v{s.version}" if s.version is not None else None,
                           "yes" if s.current else "") for s in view.snapshots],
                         right=("ADDED", "REMOVED", "ROWS"))))
    return EX_OK


def _print_state(g: Glance) -> None:
    state = g.state
    assert state is not None
    if state.snapshot_id is not None and state.snapshot_time is not None:
        when = tables.iso_ms(int(state.snapshot_time.timestamp() * 1000))
        print(f"{'current snapshot:':<18}{state.snapshot_id} at {when}: "
              f"{count(state.files, 'file')}, {state.records:,} rows")
    for path in state.missing:
        print(f"  missing from the table: {path}")
    for path in state.extra:
        print(f"  listed, not in the lake: {path}")


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


# -- sync ------------------------------------------------------------------------------------

def _sync(catalog: LakeCatalog, feeds: list[Feed], lock_wait: float) -> int:
    if not feeds:
        print("lakeexportd catalog sync: no Parquet feed is configured; nothing to do")
        return EX_OK

    def work(feed: Feed, progress: ProgressLine) -> list[str]:
        return [_synced(sync_locked(catalog, feed, lock_wait=lock_wait))]
    return each_feed("catalog sync", feeds, lambda feed: ProgressLine(), work)


def _synced(done: CatchUp) -> str:
    """``catalog sync tx: lake.tx level: added 3 files, removed 1 file, 1 snapshot``."""
    s = done.sync
    head = f"catalog sync {s.feed}: {s.table}"
    if s.waiting:
        return f"{head}: nothing to register yet ({s.waiting})"
    if not (s.created or s.snapshots or s.expired):
        text = f"{head} was already level"
    else:
        what = [f"added {count(s.added, 'file')}", f"removed {count(s.removed, 'file')}",
                f"{count(s.snapshots, 'snapshot')} committed"]
        if s.expired:
            what.append(f"{count(s.expired, 'snapshot')} naming deleted files expired")
        text = f"{head} {'created and ' if s.created else ''}level: {', '.join(what)}"
    if done.deleted:
        text += (f"; deleted {count(len(done.deleted), 'file')} the lake had dropped while "
                 "the catalog was behind")
    return text


# -- drop ------------------------------------------------------------------------------------

def _drop_target(catalog: LakeCatalog, config: Config, name: str) -> Feed:
    """The feed named, or a stand-in for a table no configured feed owns (its level from
    its namespace), so an old feed's table can be dropped too."""
    if name in _known(config):
        return _feed(config, name)
    for namespace, table in catalog.tables():
        if table != name:
            continue
        for level in LEVELS:
            if catalog.settings.namespace_of(level) == namespace:  # type: ignore[arg-type]
                return Feed(name=name, source="?", kind="stream", schedule=Schedule(every=60),
                            security=level)  # type: ignore[arg-type]
    raise _Usage(f"{name!r} is neither a configured feed nor a table of {catalog.where}")


def _drop(catalog: LakeCatalog, feed: Feed, yes: bool) -> int:
    table = catalog.name(feed)
    what = f"table {table} from {catalog.where} (the lake's files are kept)"
    if not yes:
        if not sys.stdin.isatty():
            print(f"lakeexportd catalog drop: refusing to drop {what} without confirmation on "
                  "a non-interactive input; pass --yes", file=sys.stderr)
            return EX_USAGE
        answer = input(f"Drop {what}? Readers through the catalog lose it and its snapshots. "
                       "Type the feed name to confirm: ")
        if answer.strip() != feed.name:
            print("lakeexportd catalog drop: not confirmed; nothing dropped", file=sys.stderr)
            return EX_USAGE
    if not catalog.drop(feed):
        print(f"catalog drop {feed.name}: {table} is not in {catalog.where}; nothing dropped")
        return EX_FAILED
    print(f"catalog drop {feed.name}: dropped {table} from {catalog.where}. The lake's files "
          f"are kept; the feed's next export (or `lakeexportd catalog sync {feed.name}`) "
          "registers it again: remove the feed from the configuration to keep it out")
    return EX_OK
