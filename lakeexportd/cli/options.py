"""What every command shares: ``-c/--config`` (one definition, one type) and help text."""

from __future__ import annotations

import argparse
from pathlib import Path

CONFIG_HELP = (
    "configuration file (default: $LAKEEXPORTD_CONFIG, then /etc/lakeexportd/lakeexportd.yaml)"
)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", type=Path, default=None,
                        help=CONFIG_HELP)


def plain(doc: str | None) -> str:
    """A module docstring as ``--help`` text: reST's double backquotes become single ones."""
    return (doc or "").replace("``", "`")
