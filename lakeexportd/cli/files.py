"""``lakeexportd files FEED``: the committed data files of a feed, as URLs or paths a reader opens.

Exactly what the feed's ``_metadata.json`` lists: every file of a stream; one version of a
table (the current one, ``--version N``, or the one current at ``--as-of TIME``). On an object
store, a reader that globs can also see uploads of a run that has not committed yet; a reader
given this list cannot. Read-only.

Time travel (``lakeexportd history FEED`` lists the commit times): ``--as-of TIME`` goes by
commit time, in whole seconds. A table gives the newest kept version committed at or before
TIME. A stream gives the listed files committed at or before TIME (each file's ``added``; for
files written before lakeexportd recorded it, the run start in the file's name). Only what is
still listed can be given: files removed by ``retention_days`` are gone, and a day compacted
later shows as of the commit of its newest input, so an ``--as-of`` inside such a day
under-reports it. A Parquet stream has no numbered versions: ``--version`` is refused. TIME
before the first commit is an error; TIME in the future gives the current state.

A Delta feed (``format: delta``): the files of its log's current version, of Delta version
``--version N``, or of the version current at ``--as-of TIME``, from the log (not the summary).

Exit codes: 0 ok; 1 unreadable metadata, no such version, or TIME before the first commit;
2 unknown feed or bad arguments; 78 invalid configuration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import asdict

from lakeexportd.audit.files import committed_files
from lakeexportd.audit.report import MetadataReader
from lakeexportd.cli.export import parse_time_ms
from lakeexportd.cli.options import add_config_argument, plain
from lakeexportd.config.load import default_config_path, load_config
from lakeexportd.errors import EX_FAILED, EX_OK
from lakeexportd.lake import delta
from lakeexportd.lake.configured import lake_of


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("files", help="print the committed data files of a feed (for readers)",
                            description=plain(__doc__),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("feed", metavar="FEED")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, metavar="N",
                       help="a table's kept version N (see `lakeexportd history FEED`)")
    which.add_argument("--as-of", metavar="TIME",
                       help="the state committed at TIME (ISO, UTC unless an offset is given, "
                       "or epoch ms): a table's version then current, a stream's files then "
                       "listed")
    parser.add_argument("--json", action="store_true",
                        help="print JSON (url, partition, records, size_bytes per file)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config or default_config_path())
    lake = lake_of(config.lake)
    reader = MetadataReader(lake.root, now=dt.datetime.now(dt.UTC), storage=lake.storage)
    feed_dir = reader.feed_dir(args.feed)  # an unknown feed is UnknownFeed: exit 2
    as_of = None
    if args.as_of is not None:
        as_of = dt.datetime.fromtimestamp(parse_time_ms(args.as_of) / 1000, dt.UTC)
    doc = reader.store.load(feed_dir)
    if doc is None and not delta.is_delta(reader.store.storage, feed_dir):
        print(f"lakeexportd files: feed {args.feed!r} has not been exported yet: no files",
              file=sys.stderr)
        return EX_FAILED if args.version is not None or as_of is not None else EX_OK
    files = committed_files(reader.store.storage, feed_dir, doc, version=args.version,
                            as_of=as_of)
    if args.json:
        print(json.dumps([asdict(f) for f in files], indent=2))
    else:
        for f in files:
            print(f.url)
    return EX_OK
