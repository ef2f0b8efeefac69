"""``lakeexportd check-store``: can this lake's store hold exactly-once?

Exactly-once stands on two fences: create-if-absent (a first commit or a lease is made once)
and If-Match (a commit replaces only the ``_metadata.json`` it read). On an object store both
are the store's own conditional writes; on a local folder they are lakeexportd's, under
``flock``. The check writes, replaces and removes one scratch object or file under the lake's
root (``.lakeexportd-check-*``), and the daemon runs the same check at start on object stores.
Exit codes: 0 the store holds them; 78 it does not, or refuses the credentials (the message
says which); 75 it cannot be reached.
"""

from __future__ import annotations

import argparse

from lakeexportd.cli.options import add_config_argument, plain
from lakeexportd.config.load import default_config_path, load_config
from lakeexportd.errors import EX_OK
from lakeexportd.lake.configured import check_store, lake_of


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
    check_store(lake)  # raises with the store named and what it lacks
    kind = "object store" if config.lake.url is not None else "local folder (flock)"
    print(f"{lake.where}: {kind}: create-if-absent ok, If-Match ok")
    return EX_OK
