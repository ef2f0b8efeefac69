"""The command line: argument parsing, exit codes, the commands (thin: parse, call, print).

``lakeexportd.cli:main`` is the console entry point; ``cli.demo`` is ``make run``.
May import every layer below it. Imported by nothing in the package.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The ``lakeexportd`` command (loads the commands only when called)."""
    from lakeexportd.cli.commands import main as run

    code: int = run(argv)
    return code
