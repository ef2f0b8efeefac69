"""``lakeexportd check-store``: can this lake's store hold exactly-once?

Exactly-once stands on two fences: create-if-absent (a first commit or a lease is made once)
and If-Match (a commit replaces only the ``_metadata.json`` it read). On an object store both
are the store's own conditional writes; on a local folder they are lakeexportd's, under
``flock``. The check writes, replaces and removes scratch objects or files under the lake's
root (``.lakeexportd-check-*``): the conditional writes, then one file streamed the way data
files are written (on an object store, a two-part multipart upload). The daemon runs the
conditional-write check at start, and on a reload onto another object-store lake.
Exit codes: 0 the store holds them; 78 it does not, or refuses the credentials (the message
names the store and what failed); 75 it cannot be reached.
"""

from __future__ import annotations

import argparse

from lakeexportd.cli.options import add_config_argument, plain
from lakeexportd.config.load import default_config_path, load_config
from lakeexportd.errors import EX_OK
from lakeexportd.lake.configured import check_store, check_streaming_write, lake_of
from lakeexportd.lake.storage import ObjectStorage


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("check-store", help="check that the lake's store enforces the "
                            "conditional writes exactly-once needs",
                            description=plain(__doc__),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config or default_config_path())
    lake = lake_of(config.lake)
    checked = check_store(lake)  # raises with the store named and what it lacks
    streamed = check_streaming_write(lake)
    if isinstance(lake.storage, ObjectStorage):
        kind = "object store"
        locks = f"feed locks: lease objects _lease.json (ttl {lake.storage.lease_ttl:g}s)"
    else:
        kind, locks = "local folder", "feed locks: flock on each feed's .lock"
    print(f"{lake.where}: {kind}: create-if-absent ok, If-Match ok")
    for line in (*checked, streamed):
        print(f"  ok  {line}")
    print(f"  --  {locks}")
    return EX_OK
