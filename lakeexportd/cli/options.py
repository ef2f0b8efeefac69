"""What every command shares: ``-c/--config`` (one definition, one type), help text, counts and
the progress line of long commands."""

from __future__ import annotations

import argparse
import sys
import time
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


def count(number: int, noun: str) -> str:
    """``1 file``, ``3 files``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


class ProgressLine:
    """One line on stderr, redrawn at most every 0.2 s, on a terminal only (`tier`,
    `compact`); ``done()`` wipes it."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def show(self, text: str) -> None:
        now = time.monotonic()
        if self.tty and now - self._last >= 0.2:
            self._last = now
            sys.stderr.write(f"\r  {text} ")
            sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self._last:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
