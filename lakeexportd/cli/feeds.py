"""``lakeexportd feeds ACTION``: list, show, add, update, enable, disable, archive, restore,
delete, sync.

Every subcommand loads ``-c FILE`` and first applies it to the registry (what ``feeds sync``
does), so what it shows and changes agrees with the YAML. Output is a table (or ``key: value``
lines) for people and, with ``--json``, one JSON document on stdout for scripts.

A running daemon needs no signal and no pid file: it re-reads the registry before each run and
on SIGHUP (DESIGN.md section 8). A feed disabled here is skipped from its next tick; one
enabled, added or restored here is scheduled at the daemon's next re-read (SIGHUP, i.e.
``systemctl reload lakeexportd``, applies it at once).

Exit codes: 0 done; 1 refused (e.g. enabling an archived feed) or the registry is unreadable;
2 usage: unknown feed, a bad feed name, bad option values, or ``delete`` without confirmation;
78 the configuration file is invalid (or reuses an archived feed's name with another source).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from dataclasses import fields, replace
from typing import Any

from lakeexportd.audit.text_table import render
from lakeexportd.cli.options import add_config_argument, plain
from lakeexportd.config.load import default_config_path, load_config
from lakeexportd.config.model import Config, Feed
from lakeexportd.errors import EX_OK, EX_USAGE, ConfigError
from lakeexportd.feeds.manager import FeedEntry, FeedManager, FeedUsageError, SyncReport
from lakeexportd.feeds.registry import feed_from_options, feed_options, to_json
from lakeexportd.lake.configured import lake_of

_OPTION_FLAGS: dict[str, dict[str, Any]] = {
    "source": {"help": "ksqlDB stream or table name (unquoted, as SHOW STREAMS lists it)"},
    "kind": {"choices": ("stream", "table")},
    "every": {"metavar": "DURATION", "help": "run every DURATION (e.g. 30s, 5m)"},
    "cron": {"metavar": "EXPR", "help": "run on a 5-field cron expression (UTC)"},
    "security": {"choices": ("raw", "anonymized", "aggregated")},
    "batch_size": {"type": int, "metavar": "N"},
    "settle_delay": {"metavar": "DURATION", "help": "streams: wait for late rows (e.g. 30s)"},
    "start": {"choices": ("earliest", "now"), "help": "streams: where the first run starts"},
    "event_time": {"metavar": "COLUMN", "help": "streams: partition by this column"},
    "timezone": {"metavar": "TZ", "help": "streams: calendar of the day partitions"},
    "retention_days": {"type": int, "metavar": "N"},
    "retention_versions": {"type": int, "metavar": "N", "help": "tables: versions kept"},
    "max_rows_per_file": {"type": int, "metavar": "N"},
    "max_open_partitions": {"type": int, "metavar": "N"},
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    feeds = sub.add_parser(
        "feeds", help="manage feeds at run time: list, add, enable, disable, archive, ...",
        description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = feeds.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, text: str, *, feed: bool = True) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=text, description=text)
        add_config_argument(parser)
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")
        if feed:
            parser.add_argument("feed", metavar="FEED")
        parser.set_defaults(handler=run)
        return parser

    listing = action("list", "list registered feeds", feed=False)
    listing.add_argument("--state", choices=("active", "disabled", "archived"))
    action("show", "show one feed's definition, state and history")
    add = action("add", "add a feed from the command line (origin cli)")
    _option_flags(add, required=True)
    add.add_argument("--disabled", action="store_true", help="register it disabled")
    update = action("update", "change settings of a feed added with `feeds add`")
    _option_flags(update, required=False)
    for name, text in (("enable", "let the daemon export the feed again"),
                       ("disable", "stop exporting the feed (the data stays)"),
                       ("archive", "retire the feed: not exported, data kept"),
                       ("restore", "bring an archived feed back")):
        action(name, text).add_argument("--reason", default="", help="why (kept in history)")
    delete = action("delete", "remove a cli or archived feed's entry (data only with --purge)")
    delete.add_argument("--purge", action="store_true",
                        help="also delete its data folder and staging (asks for confirmation)")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    action("sync", "apply the configuration file to the registry now", feed=False)


def _option_flags(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The feed settings as flags; ``update`` (``required=False``) leaves out source and kind,
    which never change (the feed's folder would mix two sources): add a new feed instead."""
    for key, options in _OPTION_FLAGS.items():
        if not required and key in ("source", "kind"):
            parser.set_defaults(**{f"opt_{key}": None})
            continue
        parser.add_argument(f"--{key.replace('_', '-')}", dest=f"opt_{key}", default=None,
                            required=required and key in ("source", "kind"), **options)
    parser.add_argument("--reason", default="", help="why (kept in history)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config or default_config_path())
    lake = lake_of(config.lake)
    manager = FeedManager(lake.root, now=lambda: dt.datetime.now(dt.UTC), storage=lake.storage)
    # Only `feeds sync` applies the YAML (the daemon does at start and on SIGHUP): applying
    # an edited file that the daemon has not reloaded would stop or archive feeds behind it.
    if args.action == "sync":
        return _print_sync(manager.sync_from_config(config), args.json)
    pending = manager.sync_from_config(config, dry_run=True)
    if pending.changed:
        print(f"feeds: note: {config.path} differs from the registry "
              f"({'; '.join(pending.lines())}); not applied: the daemon applies it at its next "
              "start or reload (SIGHUP), or run `lakeexportd feeds sync`", file=sys.stderr)
    if args.action == "list":
        return _print_entries(manager.list(args.state), args.json)
    if args.action == "show":
        return _show(manager.get(args.feed), args.json)
    if args.action == "add":
        feed = _parse_options(config, _given(args, {"name": args.feed}), "feeds add")
        entry = manager.add(replace(feed, enabled=not args.disabled), args.reason)
        return _done(entry, "added", args.json)
    if args.action == "update":
        return _update(manager, config, args)
    if args.action == "delete":
        return _delete(manager, args)
    entry = getattr(manager, args.action)(args.feed, args.reason)
    return _done(entry, args.action + "d", args.json)  # enabled, disabled, archived, restored


def _given(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """YAML-form options from the flags that were given, over ``base``."""
    options = dict(base)
    for key in _OPTION_FLAGS:
        value = getattr(args, f"opt_{key}")
        if value is None:
            continue
        if key in ("every", "cron"):
            options["schedule"] = {key: value}
        else:
            options[key] = value
    if args.opt_every is not None and args.opt_cron is not None:
        raise FeedUsageError("give --every or --cron, not both")
    return options


def _parse_options(config: Config, options: dict[str, Any], command: str) -> Feed:
    """Validate like a YAML entry; errors name the flag instead of the YAML key."""
    try:
        return feed_from_options(options, where=f"lakeexportd {command}",
                                 defaults=config.defaults)
    except ConfigError as exc:
        # YAML key paths become the flags that set them; the name is the FEED argument.
        text = re.sub(r"\$\.(?:schedule\.)?([a-z_]+)",
                      lambda m: "FEED" if m[1] == "name" else "--" + m[1].replace("_", "-"),
                      str(exc))
        raise FeedUsageError(text) from None


def _update(manager: FeedManager, config: Config, args: argparse.Namespace) -> int:
    entry = manager.get(args.feed)
    new = _parse_options(config, _given(args, feed_options(entry.feed)), "feeds update")
    changes = {f.name: getattr(new, f.name) for f in fields(Feed)
               if getattr(new, f.name) != getattr(entry.feed, f.name)}
    if not changes:
        raise FeedUsageError(f"feed {args.feed!r}: nothing to change (give option flags such as "
                             "--every 1m; see `lakeexportd feeds update -h`)")
    return _done(manager.update(args.feed, args.reason, **changes), "updated", args.json)


def _delete(manager: FeedManager, args: argparse.Namespace) -> int:
    entry = manager.get(args.feed)
    what = "its registry entry and ALL ITS DATA" if args.purge else "its registry entry"
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"lakeexportd feeds delete: refusing to delete {what} without confirmation "
                  "on a non-interactive input; pass --yes", file=sys.stderr)
            return EX_USAGE
        answer = input(f"Delete feed {entry.name!r} ({entry.feed.kind} {entry.feed.source}): "
                       f"{what}? Type the feed name to confirm: ")
        if answer.strip() != entry.name:
            print("lakeexportd feeds delete: not confirmed; nothing deleted", file=sys.stderr)
            return EX_USAGE
    removed = manager.delete(args.feed, purge=args.purge)
    if args.json:
        print(json.dumps({"feed": entry.name, "deleted": True,
                          "purged": [str(p) for p in removed]}, indent=2))
    else:
        print(f"feed {entry.name}: deleted" + "".join(f"\n  removed {p}" for p in removed))
    return EX_OK


def _done(entry: FeedEntry, verb: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps(to_json(entry), indent=2))
    else:
        print(f"feed {entry.name}: {verb}; state {entry.state} ({entry.origin})")
    return EX_OK


def _print_sync(report: SyncReport, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"added": report.added, "updated": report.updated,
                          "archived": report.archived, "restored": report.restored,
                          "unchanged": report.unchanged}, indent=2))
    else:
        print("\n".join(report.lines()) if report.changed
              else f"registry up to date ({len(report.unchanged)} config feeds)")
    return EX_OK


def _print_entries(entries: list[FeedEntry], as_json: bool) -> int:
    if as_json:
        print(json.dumps([to_json(e) for e in entries], indent=2))
        return EX_OK
    rows = [(e.name, e.state, e.origin, e.feed.kind, e.feed.source,
             "realtime" if e.feed.realtime else str(e.feed.schedule),
             e.changed, e.reason) for e in entries]
    print(render(("FEED", "STATE", "ORIGIN", "KIND", "SOURCE", "SCHEDULE", "CHANGED", "REASON"),
                 rows))
    return EX_OK


def _show(entry: FeedEntry, as_json: bool) -> int:
    if as_json:
        print(json.dumps(to_json(entry), indent=2))
        return EX_OK
    print(f"feed {entry.name}: {entry.state} ({entry.origin}), changed {entry.changed}: "
          f"{entry.reason}")
    if entry.override:
        print(f"  operator override: {entry.override} (until the feed's YAML entry changes)")
    for key, value in feed_options(entry.feed).items():
        print(f"  {key}: {json.dumps(value) if isinstance(value, dict) else value}")
    print("history:")
    print(render(("AT", "STATE", "BY", "REASON"),
                 [(c.at, c.state, c.by, c.reason) for c in entry.history]))
    return EX_OK
