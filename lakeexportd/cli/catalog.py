"""``lakeexportd catalog list|show|sync|drop``: the Iceberg tables of the Parquet feeds.

Every `format: parquet` feed is an Apache Iceberg table in the configured `catalog:` (README,
Data catalogue); the lake's `_metadata.json` is the truth and the table follows it after each
commit. `list` shows each feed's table against the lake: level, behind (files missing from or
extra in the table), not registered, or refused (a column Iceberg cannot hold exactly), with
its current snapshot, files and rows; tables in the catalog no configured feed owns are listed
after. `show FEED` prints the table: location, Iceberg metadata file, schema with Iceberg types,
partitioning, properties (description, owner, tags), snapshots, and its state against the lake.
Both are read-only. `sync [FEED]` brings the named feed's table (default: every Parquet feed's)
level now, under the feed's lock (it waits for a running export, up to scheduler.lock_wait),
then deletes the files the lake dropped while the catalog was behind (local lakes; on an object
store the next export's sweep does). `drop FEED` removes the table from the catalog and keeps
every file of the lake (it asks first; --yes does not ask); the feed's next export registers it
again. Exit codes: 0 ok (list/show: whatever the state); 1 a sync or drop failed, or show found
no table; 2 unknown or Delta feed, or drop not confirmed; 75 the catalog did not answer (list,
show) or the feed was locked (sync); 78 configuration error, or no `catalog:` configured.
"""

from __future__ import annotations

import argparse

from lakeexportd.cli.options import add_config_argument, plain


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("catalog", help="the Iceberg tables of the Parquet feeds: list, "
                            "show, sync, drop", description=plain(__doc__),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, text: str) -> argparse.ArgumentParser:
        sub_parser = actions.add_parser(name, help=text, description=text)
        add_config_argument(sub_parser)
        sub_parser.set_defaults(handler=run)
        return sub_parser

    listing = action("list", "every Parquet feed's table and its state against the lake "
                     "(read-only)")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    show = action("show", "one feed's table: schema, partitioning, properties, snapshots, "
                  "state against the lake (read-only)")
    show.add_argument("feed", metavar="FEED")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    sync = action("sync", "bring a feed's table (default: every Parquet feed's) level with "
                  "the lake now, under the feed's lock")
    sync.add_argument("feed", nargs="?", metavar="FEED",
                      help="the feed to sync (default: every Parquet feed)")
    drop = action("drop", "remove a feed's table from the catalog; the lake's files are kept "
                  "(the feed's next export registers it again)")
    drop.add_argument("feed", metavar="FEED",
                      help="a feed, or a table in the catalog no configured feed owns")
    drop.add_argument("--yes", action="store_true", help="do not ask for confirmation")



def run(args: argparse.Namespace) -> int:
    from lakeexportd.cli import catalog_cmd  # pyiceberg, only for this command

    return catalog_cmd.run(args)
