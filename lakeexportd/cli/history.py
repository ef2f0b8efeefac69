"""``lakeexportd history FEED``: a feed's commits, newest first, for time travel.

One line per commit: VERSION, TIME (the commit time, UTC, whole seconds), OPERATION, ROWS,
FILES, BYTES, RUN (the run id of `export.finished` and `_metadata.json`'s `exports`), NOTE.
A table lists its kept versions (`current` marks the one readers read; `lakeexportd files FEED
--version N` gives any kept one) and the older versions its history still names, marked `not
readable` (removed by `retention_versions`). A Parquet stream has no numbered versions: it lists
each successful run as an `append` commit (0 rows: an empty run; `backfill` for a backfill), and
`lakeexportd files FEED --as-of TIME` gives its files as of one of these times; a run none of
whose files is listed any more (retention_days, or replaced by a backfill) is marked `not
readable`. Only the last 100 runs are recorded, so a stream's older commits are not shown.
Failed runs committed nothing and are not listed (`lakeexportd metadata show FEED` shows the
recent ones). A Delta feed (`format: delta`) lists its log's commits by Delta version:
`append`/`overwrite` for its runs, and the log's own operations (`optimize`, `vacuum start`,
`create table`, ...); readable ones are what `files FEED --version N` and Delta readers'
version/time travel reach. Read-only.
Exit codes: 0 ok; 1 unreadable metadata; 2 unknown feed or bad arguments; 78 invalid
configuration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import asdict

from lakeexportd.audit.history import HistoryEntry, history
from lakeexportd.audit.report import MetadataReader
from lakeexportd.audit.text_table import human_bytes, render
from lakeexportd.cli.options import add_config_argument, plain
from lakeexportd.config.load import default_config_path, load_config
from lakeexportd.errors import EX_OK
from lakeexportd.lake.configured import lake_of

HEADERS = ("VERSION", "TIME", "OPERATION", "ROWS", "FILES", "BYTES", "RUN", "NOTE")


def _positive(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of commits >= 1")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("history", help="list a feed's commits (versions) with time, "
                            "operation, rows and bytes", description=plain(__doc__),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("feed", metavar="FEED")
    parser.add_argument("--limit", type=_positive, metavar="N", help="only the newest N commits")
    parser.add_argument("--json", action="store_true",
                        help="print JSON: a list, newest first, of {version, time, operation, "
                        "rows, bytes, files, run_id, current, readable}")
    parser.set_defaults(handler=run)


def _row(h: HistoryEntry) -> tuple[object, ...]:
    gone = "not readable (retention)" if h.version is not None else "not readable (files removed)"
    note = "current" if h.current else ("" if h.readable else gone)
    return (f"v{h.version}" if h.version is not None else None, h.time, h.operation,
            None if h.rows is None else f"{h.rows:,}", h.files,
            None if h.bytes is None else human_bytes(h.bytes), h.run_id, note)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config or default_config_path())
    lake = lake_of(config.lake)
    reader = MetadataReader(lake.root, now=dt.datetime.now(dt.UTC), storage=lake.storage)
    feed_dir = reader.feed_dir(args.feed)  # an unknown feed is UnknownFeed: exit 2
    doc = reader.store.load(feed_dir)
    entries = history(reader.store.storage, feed_dir, doc, limit=args.limit)
    if doc is None and not entries:
        print(f"lakeexportd history: feed {args.feed!r} has not been exported yet: no commits",
              file=sys.stderr)
    if args.json:
        print(json.dumps([asdict(h) for h in entries], indent=2))
    elif entries:
        print(render(HEADERS, [_row(h) for h in entries], right=("ROWS", "FILES", "BYTES")))
    return EX_OK
