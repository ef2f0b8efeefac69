"""``lakeexportd status [FEED] [--json]``: what runs on this lake, at a glance.

Per feed: state (registry), table format (``delta`` with the Delta version ``_metadata.json``
summarises), last run and its result and lag (``_metadata.json``), next run and
whether it runs now (asked of each running daemon's ``/status``), and which daemons stand by
for it (their last run found it held by another daemon or process). On top: the daemons
running on the lake (``<lake>/.daemons/``), with a warning when there is more than one.
With a ``catalog:``, each Parquet feed's Iceberg table state too (level, behind: N missing, M
extra; asked within catalog.timeout, else "catalog unreachable: <reason>"). Read-only.
Exit 0; 2 for an unknown feed; 78 for a bad config.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import urllib.error
import urllib.request
from dataclasses import asdict
from typing import Any

from lakeexportd.audit.report import MetadataReader
from lakeexportd.audit.text_table import human_age, render
from lakeexportd.cli.catalog_states import feed_states, long_states, state_cell
from lakeexportd.cli.options import add_config_argument, plain
from lakeexportd.config.load import default_config_path, load_config
from lakeexportd.errors import EX_OK, EX_USAGE
from lakeexportd.feeds.manager import FeedManager
from lakeexportd.lake.configured import lake_of
from lakeexportd.lake.presence import DaemonInfo, live_daemons

_ASK_TIMEOUT = 2.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("status", help="feeds and daemons of the lake at a glance",
                            description=plain(__doc__),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("feed", nargs="?", metavar="FEED", help="one feed (default: all)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(handler=run)


def _ask(daemon: DaemonInfo) -> dict[str, Any] | None:
    """The daemon's ``/status``, or None if it does not answer (it may be starting or hung)."""
    try:
        with urllib.request.urlopen(f"http://{daemon.metrics}/status",
                                    timeout=_ASK_TIMEOUT) as answer:
            data = json.loads(answer.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return data if isinstance(data, dict) and data.get("pid") == daemon.pid else None


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config or default_config_path())
    lake = lake_of(config.lake)
    root = lake.root
    now = dt.datetime.now(dt.UTC)
    known = FeedManager(root, now=lambda: now, storage=lake.storage).known_feeds(config)
    if args.feed is not None and args.feed not in known:
        print(f"lakeexportd status: unknown feed {args.feed!r} in {config.path} and the "
              f"registry; feeds: {', '.join(sorted(known)) or '(none)'}", file=sys.stderr)
        return EX_USAGE
    daemons = live_daemons(root, lake.storage)
    answers = {d.pid: _ask(d) for d in daemons}
    reader = MetadataReader(root, now=now, storage=lake.storage)
    names = sorted(known) if args.feed is None else [args.feed]
    catalog = feed_states(config, [known[name][0] for name in names])  # None: no catalog
    rows: list[dict[str, Any]] = []
    for name in names:
        feed, state = known[name]
        summary = reader.summary(name) if name in reader.feeds() else None
        scheduled = [(d, a["feeds"][name]) for d in daemons
                     if (a := answers[d.pid]) is not None and name in a.get("feeds", {})]
        rows.append({
            "feed": name, "kind": feed.kind, "state": state, "format": feed.format,
            "delta_version": summary.delta_version if summary else None,
            "last_run": summary.last_export if summary else None,
            "result": summary.last_status if summary else None,
            "lag_s": summary.lag_s if summary else None,
            "next_run": min((s["next_run"] for _, s in scheduled if s["next_run"]), default=None),
            "running": any(s["running"] for _, s in scheduled),
            # a daemon whose last run of it was skipped: another daemon or process holds it
            "standby": [d.pid for d, s in scheduled if s.get("held_elsewhere")],
            "daemons": [d.pid for d, _ in scheduled],
            "error": summary.error if summary else None,
            "catalog": catalog.get(name) if catalog is not None else None,
            "mode": feed.mode,
            # realtime feeds: each daemon's push query (state, commits, lag...)
            "queries": {str(d.pid): s["query"] for d, s in scheduled if s.get("query")},
        })
    if args.json:
        print(json.dumps({"lake": str(root), "daemons": [asdict(d) | {"answers": answers[d.pid]
                                                                       is not None}
                                                          for d in daemons],
                          "feeds": rows}, indent=2))
        return EX_OK
    _print_daemons(root, daemons, answers)
    headers = ["FEED", "STATE", "KIND", "FORMAT", "LAST RUN", "RESULT", "LAG", "NEXT RUN",
               "RUNNING"]
    table = [[r["feed"], r["state"], r["kind"], _format(r), r["last_run"], r["result"],
              human_age(r["lag_s"]),
              "realtime" if r["mode"] == "realtime" else
              r["next_run"][:19] + "Z" if r["next_run"] else None,
              _running(r)] for r in rows]
    if catalog is not None:
        headers.append("CATALOG")
        for line, r in zip(table, rows, strict=True):
            line.append(state_cell(r["catalog"]))
    print(render(headers, table))
    for r in rows:
        if r["standby"]:
            pids = ", ".join(str(p) for p in r["standby"])
            print(f"{r['feed']}: held by another daemon or process; standing by: pid {pids}")
        if r["error"]:
            print(f"{r['feed']}: {r['error']}")
    for note in long_states({r["feed"]: r["catalog"]["state"] for r in rows
                             if r["catalog"] is not None}, prefix=True):
        print(note)
    return EX_OK



def _format(row: dict[str, Any]) -> str:
    """``parquet``, or ``delta v12`` (the Delta version of the feed's last summary)."""
    version = row["delta_version"]
    return f"{row['format']} v{version}" if version is not None else str(row["format"])


def _print_daemons(root: Any, daemons: list[DaemonInfo],
                   answers: dict[int, dict[str, Any] | None]) -> None:
    if not daemons:
        print(f"no daemon runs on this lake ({root}): no next runs to show")
    for d in daemons:
        note = "" if answers[d.pid] is not None else " (does not answer on /status)"
        print(f"daemon: {d.describe()}{note}")
    if len(daemons) > 1:
        print(f"warning: {len(daemons)} daemons run on this lake; each feed still runs once at "
              "a time (per-feed locks), but their metrics are split between them")


def _running(row: dict[str, Any]) -> str:
    """yes/no; for a realtime feed its query's state (running, reconnecting, ...)."""
    states = [q["state"] for q in row["queries"].values() if q["state"] != "standby"]
    if row["mode"] == "realtime" and states:
        return ", ".join(sorted(set(states)))
    return "yes" if row["running"] else "no"
