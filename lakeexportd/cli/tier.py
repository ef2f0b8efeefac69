"""``lakeexportd tier [FEED ...] [--dry-run]``: move old day partitions to a colder class now.

For each stream feed with `tiering: {after, class}` (the named ones, or every feed that has
it), the closed day partitions older than `after` whose files are not in `class` yet are
rewritten in place, same paths and bytes, in that class (S3 storage class, Azure access
tier), and `_metadata.json` records it. The daemon does the same once a day. --dry-run lists
what would move and changes nothing. Output: one line per partition (files, bytes,
from -> to) and one summary line per feed with its bytes per class; on a terminal, a
progress line while objects are rewritten.
Exit codes: 0 done (or nothing to do); 1 a feed failed (the message says what to do);
2 unknown feed or one without `tiering:`; 75 a feed was locked by its export for longer
than scheduler.lock_wait, or the store could not be reached (run again); 78 configuration
error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from lakeexportd.audit.text_table import human_bytes
from lakeexportd.cli.export import _select, _UsageError, each_feed
from lakeexportd.cli.options import ProgressLine, add_config_argument, count, plain
from lakeexportd.config.load import default_config_path, load_config
from lakeexportd.config.model import Feed
from lakeexportd.errors import EX_OK, EX_USAGE
from lakeexportd.lake import layout
from lakeexportd.lake.configured import lake_of
from lakeexportd.lake.metadata_model import FileEntry
from lakeexportd.lake.tiering import Tierer, TierResult, shown_bytes_per_tier


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("tier", help="move old day partitions to a colder storage class "
                            "now (feeds with `tiering:`)", description=plain(__doc__),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("feeds", nargs="*", metavar="FEED",
                        help="feeds to tier (default: every feed with `tiering:`)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would move; change nothing")
    parser.set_defaults(handler=run)


class _Progress(ProgressLine):
    """``tier tx: 12 files, 40.1 MiB`` rewritten so far, on a terminal only."""

    def __init__(self, feed: str) -> None:
        super().__init__()
        self.feed = feed
        self.files = 0
        self.bytes = 0

    def __call__(self, partition: str, entry: FileEntry) -> None:
        self.files += 1
        self.bytes += entry.size_bytes
        self.show(f"tier {self.feed}: {count(self.files, 'file')}, "
                  f"{human_bytes(self.bytes)} rewritten ({partition})")


def report(result: TierResult) -> list[str]:
    """The lines printed for one feed's run."""
    verb = "would move" if result.dry_run else "moved"
    lines = []
    for move in result.moves:
        lines.append(f"  {move.partition}: {count(len(move.files), 'file')}, "
                     f"{human_bytes(move.size_bytes)}, {move.from_tiers} -> "
                     f"{result.storage_class}")
    partitions = len({m.partition for m in result.moves})
    tiers = shown_bytes_per_tier(result.bytes_per_tier)
    summary = (f"tier {result.feed}: {verb} {count(partitions, 'partition')}, "
               f"{count(result.files, 'file')}, {human_bytes(result.size_bytes)} to "
               f"{result.storage_class}; {'then' if result.dry_run else 'now'} "
               + (", ".join(f"{t} {human_bytes(n)}" for t, n in tiers.items()) or "empty"))
    if result.stopped:
        summary += " (stopped by shutdown; the next run goes on)"
    if result.dry_run:
        summary += " (--dry-run: nothing changed)"
    return [summary, *lines]


def tiered_feeds(feeds: list[Feed], named: bool) -> list[Feed]:
    """The feeds to tier; a named feed without ``tiering`` is a usage error."""
    without = [f.name for f in feeds if f.tiering is None]
    if named and without:
        raise _UsageError(f"feed {', '.join(map(repr, without))} has no `tiering:`; add "
                          "`tiering: {after: 30d, class: ...}` to it (or to defaults) first")
    return [f for f in feeds if f.tiering is not None]


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config or default_config_path())
    try:
        feeds = tiered_feeds(_select(config, args.feeds, every=not args.feeds,
                                     active_only=False), named=bool(args.feeds))
    except _UsageError as exc:
        print(f"lakeexportd tier: {exc}", file=sys.stderr)
        return EX_USAGE
    if not feeds:
        print("lakeexportd tier: no feed has `tiering:`; nothing to do")
        return EX_OK
    lake = lake_of(config.lake)
    tierer = Tierer(lake.storage, lake.root, lock_wait=config.scheduler.lock_wait)

    def tier(feed: Feed, progress: _Progress) -> list[str]:
        assert feed.tiering is not None
        dir_mode, file_mode = layout.modes(feed.security)
        return report(tierer.tier(feed.name, feed.tiering.storage_class,
                                  after_days=feed.tiering.after_days, timezone=feed.timezone,
                                  now=dt.datetime.now(dt.UTC), dir_mode=dir_mode,
                                  file_mode=file_mode, dry_run=args.dry_run, progress=progress))
    return each_feed("tier", feeds, lambda feed: _Progress(feed.name), tier)
