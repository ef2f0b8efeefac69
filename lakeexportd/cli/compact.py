"""``lakeexportd compact [FEED] [--before DATE] [--dry-run]``: compact closed days now.

For each stream feed (the named one, or every active stream feed with `compaction:`), the
day partitions whose day ended more than `compaction.after` ago (in the feed's time zone;
`--before DATE` compacts every day before DATE instead) and list two or more small files
have them rewritten into few files near `compaction.target_file_size`, swapped in by one
`_metadata.json` commit per day. Rows never change. The replaced files stay on disk for
`lake.orphan_grace` (readers in flight finish), then a later run deletes them. The daemon
does the same once a day. --dry-run prints the plan and changes nothing. Output: one line per
day (files in -> out, bytes) and a summary line per feed; on a terminal, a progress line.
Exit codes: 0 done (or nothing to do); 1 a feed failed (the message says what to do);
2 unknown feed, a table feed, or a bad --before; 75 a feed was locked by its export for
longer than scheduler.lock_wait, or the store could not be reached (run again); 78
configuration error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from lakeexportd.audit.text_table import human_bytes
from lakeexportd.catalog.policy import follow_catalog, open_catalog
from lakeexportd.cli.export import _select, _UsageError, each_feed
from lakeexportd.cli.options import ProgressLine, add_config_argument, count, plain
from lakeexportd.config.load import default_config_path, load_config
from lakeexportd.config.model import Feed
from lakeexportd.errors import EX_OK, EX_USAGE
from lakeexportd.lake import layout
from lakeexportd.lake.compaction import CompactResult, compact_feed
from lakeexportd.lake.configured import lake_of
from lakeexportd.lake.delta import DeltaCompaction


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("compact", help="rewrite the small files of closed stream days "
                            "into few large ones now", description=plain(__doc__),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("feed", nargs="?", metavar="FEED",
                        help="the stream feed to compact (default: every active stream feed "
                        "with `compaction:`)")
    parser.add_argument("--before", metavar="DATE", type=_date,
                        help="compact every day before DATE (YYYY-MM-DD, the feed's time "
                        "zone) instead of the days older than `compaction.after`")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be compacted; change nothing")
    parser.set_defaults(handler=run)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: write YYYY-MM-DD") from None


class _Progress(ProgressLine):
    """``compact tx: 120 files, 4.1 MiB read (year=.../day=03)`` on a terminal only."""

    def __init__(self, feed: str) -> None:
        super().__init__()
        self.feed = feed

    def __call__(self, partition: str, files: int, read: int) -> None:
        self.show(f"compact {self.feed}: {count(files, 'file')}, {human_bytes(read)} read "
                  f"({partition})")


def report(result: CompactResult | DeltaCompaction) -> list[str]:
    """The lines printed for one feed's run."""
    verb = "would compact" if result.dry_run else "compacted"
    if isinstance(result, DeltaCompaction):
        return _delta_report(result, verb)
    lines = []
    for day in result.days:
        size = human_bytes(day.size_bytes)
        if not result.dry_run:
            out = sum(w.size_bytes for w in result.written if w.partition == day.partition)
            size += f" -> {human_bytes(out)}"
        lines.append(f"  {day.partition}: {count(len(day.inputs), 'file')} -> "
                     f"{count(len(day.groups), 'file')}, {size}, "
                     f"{count(day.records, 'row')}")
    for partition in result.tiered:
        lines.append(f"  {partition}: skipped (files in a colder storage class)")
    summary = (f"compact {result.feed}: {verb} {count(len(result.days), 'day')}, "
               f"{count(result.files_in, 'file')} -> {count(result.files_out, 'file')}, "
               f"{human_bytes(result.bytes_in)}")
    if result.expired:
        summary += f"; deleted {count(result.expired, 'retired file')} past lake.orphan_grace"
    if result.stopped:
        summary += " (stopped by shutdown; the next run goes on)"
    if result.dry_run:
        summary += " (--dry-run: nothing changed)"
    return [summary, *lines]


def _delta_report(result: DeltaCompaction, verb: str) -> list[str]:
    """A Delta stream's: optimize per day (one commit each), then vacuum."""
    lines = []
    for day in result.days:
        size = human_bytes(day.bytes_in)
        if day.files_out is not None:
            size += f" -> {human_bytes(day.bytes_out or 0)}"
            lines.append(f"  {layout.day_partition(day.day)}: {count(day.files_in, 'file')} -> "
                         f"{count(day.files_out, 'file')}, {size}")
        else:
            lines.append(f"  {layout.day_partition(day.day)}: {count(day.files_in, 'file')}, "
                         f"{size}")
    summary = (f"compact {result.feed} (delta): {verb} {count(len(result.days), 'day')}, "
               f"{count(result.files_in, 'file')}")
    if not result.dry_run:
        summary += f" -> {count(result.files_out, 'file')}"
    summary += f", {human_bytes(result.bytes_in)}"
    vacuumed = result.vacuumed
    if vacuumed is not None:
        gone = len(vacuumed.removed) + len(vacuumed.leftovers)
        summary += (f"; vacuum {'would delete' if result.dry_run else 'deleted'} "
                    f"{count(gone, 'file')} no version of the last week reads")
        lines += [f"  not lakeexportd's, kept: {path}" for path in vacuumed.foreign]
    if result.stopped:
        summary += " (stopped by shutdown; the next run goes on)"
    if result.dry_run:
        summary += " (--dry-run: nothing changed)"
    return [summary, *lines]


def compacted_feeds(feeds: list[Feed], named: bool, before: dt.date | None) -> list[Feed]:
    """The feeds to compact; a named table, or a named stream with `compaction: null` and
    no --before, is a usage error."""
    if named:
        feed = feeds[0]
        if feed.kind != "stream":
            raise _UsageError(f"feed {feed.name!r} is a table: each version is written whole, "
                              "so there is nothing to compact")
        if feed.compaction is None and before is None:
            raise _UsageError(f"feed {feed.name!r} has `compaction: null`; give --before DATE "
                              "to compact it once, or configure `compaction:`")
        return feeds
    return [f for f in feeds if f.kind == "stream" and f.compaction is not None]


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config or default_config_path())
    names = [args.feed] if args.feed else []
    try:
        feeds = compacted_feeds(_select(config, names, every=not names, active_only=False),
                                named=bool(names), before=args.before)
    except _UsageError as exc:
        print(f"lakeexportd compact: {exc}", file=sys.stderr)
        return EX_USAGE
    if not names:
        feeds = [f for f in feeds if f in _select(config, [], every=True)]  # active ones
    if not feeds:
        print("lakeexportd compact: no active stream feed has `compaction:`; nothing to do")
        return EX_OK
    lake = lake_of(config.lake)
    catalog = None if args.dry_run else open_catalog(config.catalog, lake)

    def compact(feed: Feed, progress: _Progress) -> list[str]:
        return report(compact_feed(lake.storage, lake.root, feed, now=dt.datetime.now(dt.UTC),
                                   lock_wait=config.scheduler.lock_wait,
                                   orphan_grace=config.lake.orphan_grace, before=args.before,
                                   dry_run=args.dry_run, progress=progress,
                                   follow=follow_catalog(catalog, feed)))
    return each_feed("compact", feeds, lambda feed: _Progress(feed.name), compact)
