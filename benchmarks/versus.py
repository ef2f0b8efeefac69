"""Time ``lakeexportd export`` of this tree against an older commit, on the same canned body.

    python -m benchmarks.versus f6917dd                 # nested 200k rows, h1 and large chunks
    python -m benchmarks.versus f6917dd --dataset flat --rows 1000000

The older commit is checked out with ``git worktree`` into a temporary folder and run with this
venv (its imports must be installed here); the worktree is removed at the end. Each side runs
``--rounds`` times per framing, alternating, and the best wall time is reported: what the issue
tracker means by "today's rate" on the real wire (one HTTP chunk per row).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.data import flat_body, nested_body
from benchmarks.run import lakeexportd_config
from benchmarks.server import CannedServer

REPO = Path(__file__).resolve().parents[1]


def export_seconds(tree: Path, url: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        config = lakeexportd_config(url, Path(tmp) / "lake", Path(tmp) / "c.yaml")
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "lakeexportd", "export", "-c", str(config), "--all"],
            cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"export in {tree} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revision", help="the older commit to compare with")
    parser.add_argument("--dataset", choices=("nested", "flat"), default="nested")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    body = (nested_body if args.dataset == "nested" else flat_body)(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(old),
                        args.revision], check=True)
        try:
            for framing in ("rows", "large"):
                best = {"old": float("inf"), "new": float("inf")}
                with CannedServer(body, framing) as server:
                    for _ in range(args.rounds):
                        for side, tree in (("old", old), ("new", REPO)):
                            best[side] = min(best[side], export_seconds(tree, server.url))
                wire = "h1 (one chunk per row)" if framing == "rows" else "large chunks"
                for side, rev in (("old", args.revision), ("new", "this tree")):
                    print(f"{args.dataset} {args.rows:,} rows, {wire}, {rev}: "
                          f"{best[side]:.2f} s, {args.rows / best[side]:,.0f} rows/s")
                print(f"  speed-up {best['old'] / best['new']:.2f}x", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)],
                           check=False)


if __name__ == "__main__":
    main()
