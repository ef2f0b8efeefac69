"""Command line: a thin shell that parses arguments, calls the library, maps errors to exit codes.

Exit codes (DESIGN.md section 8): 0 ok, 1 failed or mismatch found, 2 usage error,
75 skipped (feed locked) or transient failure, 78 configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from lakeexportd import __version__
from lakeexportd.cli.options import add_config_argument
from lakeexportd.errors import EX_FAILED, EX_OK, LakeExportError, exit_code, unreachable_cause
from lakeexportd.lake.parquet_writer import use_lean_arrow_memory

if TYPE_CHECKING:
    from lakeexportd.config.model import Config

Handler = Callable[[argparse.Namespace], int]


def _add_sandbox(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from lakeexportd.sandbox import cli as sandbox_cli

    parser = sub.add_parser(
        "sandbox",
        help="run the ksqlDB-compatible sandbox server (demo data, fault injection)",
        description=sandbox_cli.DESCRIPTION,
    )
    sandbox_cli.add_arguments(parser)
    parser.set_defaults(handler=sandbox_cli.run)


def _add_validate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "validate",
        help="check a configuration file and list its feeds",
        description="Load and check the configuration: print a summary of its feeds and exit 0,"
        " or print the first problem and exit 78. An object-store lake's options are checked "
        "offline (check-store asks the store itself). With --source, also ask ksqlDB whether each "
        "feed's source exists and is the declared kind (exit 1 if not, 75 if ksqlDB is "
        "unreachable).",
    )
    add_config_argument(parser)
    parser.add_argument(
        "--source", action="store_true",
        help="also check each feed's source in ksqlDB (exists, and is a STREAM or TABLE as "
        "its kind says)",
    )
    parser.set_defaults(handler=_validate)


def _validate(args: argparse.Namespace) -> int:
    import datetime as dt

    from lakeexportd.config import load as config
    from lakeexportd.config.model import summarize
    from lakeexportd.lake.configured import lake_of
    from lakeexportd.service import scheduling

    loaded = config.load_config(args.config or config.default_config_path())
    lake_of(loaded.lake)  # the store's options too (offline: nothing is sent to it)
    print("\n".join(summarize(loaded)))
    now = dt.datetime.now(dt.UTC)
    for feed in loaded.feeds:
        if scheduling.never_fires(feed, now):
            print(f"warning: feed {feed.name!r}: cron {feed.schedule.cron!r} matches no date, "
                  "so the feed never runs; fix the cron", file=sys.stderr)
    return _check_sources(loaded) if getattr(args, "source", False) else EX_OK


def _check_sources(loaded: Config) -> int:
    """``validate --source``: every feed's source exists in ksqlDB with the declared kind."""
    from lakeexportd.errors import FeedError, TransientError
    from lakeexportd.ksqldb.client import client_from_settings

    client = client_from_settings(loaded.ksqldb)
    worst = EX_OK
    try:
        for feed in loaded.feeds:
            try:
                actual = client.describe(feed.source).kind
            except TransientError as exc:
                print(f"validate --source: {exc}", file=sys.stderr)
                return exit_code(exc)
            except FeedError as exc:
                print(f"feed {feed.name!r}: {exc}", file=sys.stderr)
                worst = EX_FAILED
                continue
            if actual != feed.kind:
                print(f"feed {feed.name!r} declares kind {feed.kind!r}, but ksqlDB says "
                      f"{feed.source} is a {actual.upper()}: set `kind: {actual}`",
                      file=sys.stderr)
                worst = EX_FAILED
            else:
                print(f"feed {feed.name}: {feed.source} is a {actual.upper()}, as declared")
    finally:
        client.close()
    return worst


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from lakeexportd.cli import export as cli_export

    export = sub.add_parser(
        "export",
        help="export feeds now (one run each), then exit",
        description="Run one export of each named feed (or --all enabled feeds) now. Shows "
        "progress on a terminal; exits 0 if all succeeded, 1 if one failed, 75 if one was "
        "locked by another process or ksqlDB or the lake's store did not answer, 78 on a "
        "configuration error.",
    )
    cli_export.add_export_arguments(export)
    export.set_defaults(handler=cli_export.run_export)
    repair = sub.add_parser(
        "repair",
        help="remove files that _metadata.json does not list (left by interrupted runs), "
        "or rebuild a lost _metadata.json",
        description="Remove every data file, temp file and table version that the feed's "
        "_metadata.json does not list: what an interrupted run left behind. Their rows are "
        "exported again by the next run. On an object store only what is older than "
        "lake.orphan_grace (default 1h) is removed: a writer that lost its lease while paused "
        "may still commit younger objects; they are listed as kept, with their ages (by the "
        "store's last-modified time against this host's clock). Every feed when none is "
        "named. A feed folder that "
        "holds data but no _metadata.json is never cleaned: --rebuild FEED reconstructs the "
        "document from the Parquet files (rows and sizes from the footers, schema, the "
        "watermark from the largest ROWTIME, table versions from the folders), shows it and "
        "asks before writing it.",
    )
    cli_export.add_repair_arguments(repair)
    repair.set_defaults(handler=cli_export.run_repair)
    backfill = sub.add_parser(
        "backfill",
        help="re-export one ROWTIME window of a stream exactly once (lost or damaged files)",
        description="Re-export the rows with ROWTIME in (--from, --to] from ksqlDB: the listed "
        "files holding rows of that window are rewritten without them, the window's rows come "
        "again from ksqlDB, and one commit of _metadata.json swaps them in, so every row is in "
        "the lake once. A missing listed file needs a window covering its whole run (the "
        "error names it). Shows the plan and asks first (--yes skips, --dry-run only shows).",
    )
    cli_export.add_backfill_arguments(backfill)
    backfill.set_defaults(handler=cli_export.run_backfill)


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "run",
        help="run the daemon: export every enabled feed on its schedule",
        description="Run until SIGTERM/SIGINT: export each enabled feed on its schedule, serve "
        "/metrics, /healthz and /readyz on metrics.listen, and reload the configuration on "
        "SIGHUP. An invalid configuration at start exits 78, and so does an object-store "
        "lake that does not enforce conditional writes (see check-store).",
    )
    add_config_argument(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from lakeexportd.config import load as config
    from lakeexportd.service import daemon, logs

    loaded = config.load_config(args.config or config.default_config_path())
    logs.configure(loaded.logging)
    return daemon.serve(loaded)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lakeexportd",
        description="Keep a Parquet data lake in step with ksqlDB streams and tables.",
    )
    parser.add_argument("--version", action="version", version=f"lakeexportd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_sandbox(sub)
    _add_validate(sub)
    _add_run(sub)
    _add_export(sub)
    from lakeexportd.cli import catalog as cli_catalog
    from lakeexportd.cli import check_store as cli_check_store
    from lakeexportd.cli import compact as cli_compact
    from lakeexportd.cli import feeds as cli_feeds  # operations
    from lakeexportd.cli import files as cli_files
    from lakeexportd.cli import history as cli_history
    from lakeexportd.cli import metadata as cli_metadata
    from lakeexportd.cli import status as cli_status
    from lakeexportd.cli import tier as cli_tier
    from lakeexportd.cli import verify as cli_verify

    cli_feeds.register(sub)
    cli_metadata.register(sub)
    cli_files.register(sub)
    cli_history.register(sub)
    cli_verify.register(sub)
    cli_status.register(sub)
    cli_check_store.register(sub)
    cli_tier.register(sub)
    cli_compact.register(sub)
    cli_catalog.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_lean_arrow_memory()  # bounded RSS for exports (see parquet_writer)
    if args.command in ("export", "repair", "backfill", "tier", "compact", "catalog"):
        # Results go to stdout, log events to stderr (structlog's default, stdout, mixed them).
        from lakeexportd.service import logs

        logs.events_to_stderr()
    handler: Handler = args.handler
    try:
        return handler(args)
    except LakeExportError as exc:
        print(f"lakeexportd: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except OSError as exc:  # a store or disk error no layer below put into words
        if unreachable_cause(exc) is not None:
            print(f"lakeexportd: error: the lake's store did not answer ({exc}); run the "
                  "command again once it does (`lakeexportd check-store` tests the store; "
                  "check lake.storage's endpoint and the network)", file=sys.stderr)
        else:
            print(f"lakeexportd: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return EX_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
