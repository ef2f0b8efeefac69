"""Command line: a thin shell that parses arguments, calls the library and maps errors to exit codes.

Exit codes (DESIGN.md section 8): 0 ok, 1 failed or mismatch found, 2 usage error,
75 skipped (feed locked) or transient failure, 78 configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from lakeexportd import __version__
from lakeexportd.errors import EX_FAILED, LakeExportError

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lakeexportd",
        description="Keep a Parquet data lake in step with ksqlDB streams and tables.",
    )
    parser.add_argument("--version", action="version", version=f"lakeexportd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_sandbox(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except LakeExportError as exc:
        print(f"lakeexportd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EX_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
