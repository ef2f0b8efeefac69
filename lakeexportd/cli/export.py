"""``lakeexportd export``, ``repair`` and ``backfill``: one-shot runs from the command line.

Each feed's outcome is one line on stderr; on a terminal a progress line shows rows and rows/s
while a feed exports. The exit code is the worst outcome: 78 (configuration) over 1 (a feed
failed) over 75 (locked or transient) over 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO, TypeVar

from lakeexportd.audit.text_table import human_age
from lakeexportd.cli.options import ProgressLine, add_config_argument
from lakeexportd.config.load import default_config_path, load_config
from lakeexportd.config.model import Config, Feed
from lakeexportd.errors import (
    EX_CONFIG,
    EX_FAILED,
    EX_OK,
    EX_TEMPFAIL,
    EX_USAGE,
    FeedLocked,
    LakeExportError,
    exit_code,
)
from lakeexportd.export.delta_repair import DeltaRepair
from lakeexportd.export.exporter import DataLakeExporter, ExportResult, exporter_from_config
from lakeexportd.feeds.manager import FeedManager
from lakeexportd.ksqldb.values import parse_timestamp_ms
from lakeexportd.lake.configured import lake_of

_SEVERITY = {EX_OK: 0, EX_TEMPFAIL: 1, EX_FAILED: 2, EX_CONFIG: 3}

Line = TypeVar("Line", bound=ProgressLine)


def each_feed(command: str, feeds: Sequence[Feed], progress_of: Callable[[Feed], Line],
              work: Callable[[Feed, Line], list[str]]) -> int:
    """``work`` for each feed in turn with its progress line (`tier`, `compact`): its report
    on stdout, or its failure on stderr and the next feed; the worst exit code."""
    worst = EX_OK
    for feed in feeds:
        progress = progress_of(feed)
        try:
            lines = work(feed, progress)
        except LakeExportError as exc:
            progress.done()
            print(f"{command} {feed.name}: failed: {exc}", file=sys.stderr)
            worst = max(worst, exit_code(exc), key=_SEVERITY.__getitem__)
            continue
        progress.done()
        print("\n".join(lines))
    return worst


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("feeds", nargs="*", metavar="FEED", help="feeds to export now")
    parser.add_argument(
        "--all", action="store_true",
        help="export every active feed (the YAML's and `feeds add` ones; not disabled or archived)",
    )


def add_repair_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "feeds", nargs="*", metavar="FEED", help="feeds to repair (default: every feed)"
    )
    parser.add_argument(
        "--dry-run", action="store_true",
        help="list what would be removed (or, with --rebuild, written); change nothing",
    )
    parser.add_argument(
        "--rebuild", action="store_true",
        help="rebuild a missing _metadata.json of the named feeds from their Parquet files "
        "(footers, names, partitions, version folders), after showing it and asking",
    )
    parser.add_argument(
        "--yes", action="store_true", help="with --rebuild: write without asking"
    )


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config or default_config_path())


def _known(config: Config) -> dict[str, tuple[Feed, str]]:
    """The feeds of the YAML and the registry (``feeds add``), with their state now."""
    lake = lake_of(config.lake)
    manager = FeedManager(lake.root, now=lambda: dt.datetime.now(dt.UTC), storage=lake.storage)
    return dict(manager.known_feeds(config))


def _select(
    config: Config, names: list[str], *, every: bool, active_only: bool = True
) -> list[Feed]:
    """The named feeds, or every one: active ones for export, all for repair."""
    known = _known(config)
    if every:
        return [f for f, state in known.values() if state == "active" or not active_only]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise _UsageError(
            f"unknown feed {', '.join(map(repr, unknown))} in {config.path} and the feed "
            f"registry; known feeds: {', '.join(known) or '(none)'}"
        )
    stopped = [f"{n} ({known[n][1]})" for n in names if known[n][1] != "active"]
    if active_only and stopped:
        raise _UsageError(
            f"feed {', '.join(stopped)} is not active, so it is not exported; enable it first "
            "(`lakeexportd feeds enable NAME`, or `feeds restore NAME` for an archived one)"
        )
    return [known[n][0] for n in dict.fromkeys(names)]


class _UsageError(Exception):
    """A feed argument the configuration does not know (exit 2)."""


class Progress:
    """A progress line (rows, rows/s) on a terminal; nothing otherwise."""

    def __init__(self, feed: str, stream: TextIO) -> None:
        self.feed = feed
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self._last = 0.0

    def __call__(self, rows: int) -> None:
        now = time.monotonic()
        if not self.tty or now - self._last < 0.2:
            return
        self._last = now
        rate = rows / max(now - self.started, 1e-9)
        self.stream.write(f"\r  {self.feed}: {rows:,} rows  {rate:,.0f} rows/s ")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self._last:
            self.stream.write("\r\033[K")
            self.stream.flush()


def describe(result: ExportResult) -> str:
    mb = result.bytes / 1_048_576
    rate = result.rows / result.duration_s if result.duration_s > 0 else 0.0
    text = (
        f"export {result.feed}: {result.rows:,} rows, {result.files} files, {mb:.1f} MiB "
        f"in {result.duration_s:.1f}s ({rate:,.0f} rows/s)"
    )
    if result.watermark_ms is not None:
        mark = dt.datetime.fromtimestamp(result.watermark_ms / 1000, dt.UTC)
        text += f", watermark {mark:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + "Z"
    if result.version is not None:
        text += f", version v{result.version} current ({result.versions_kept} kept)"
    return text


def run_export(args: argparse.Namespace) -> int:
    if not args.feeds and not args.all:
        print("lakeexportd export: name one or more feeds, or --all", file=sys.stderr)
        return EX_USAGE
    if args.feeds and args.all:
        print("lakeexportd export: give feed names or --all, not both", file=sys.stderr)
        return EX_USAGE
    config = _load(args)
    try:
        feeds = _select(config, args.feeds, every=args.all)
    except _UsageError as exc:
        print(f"lakeexportd export: {exc}", file=sys.stderr)
        return EX_USAGE
    realtime = [feed for feed in feeds if feed.realtime]
    for feed in realtime:
        print(f"export {feed.name}: {'skipped' if args.all else 'refused'}: a `mode: realtime` "
              "feed is exported by `lakeexportd run`, whose push query commits it every few "
              "seconds; a one-off batch run here would end its exact offsets (to run it in "
              "batch mode, set `mode: batch` with a schedule)", file=sys.stderr)
    if realtime and not args.all:
        return EX_USAGE
    feeds = [feed for feed in feeds if not feed.realtime]
    exporter = exporter_from_config(config)
    worst = EX_OK
    try:
        for feed in feeds:
            progress = Progress(feed.name, sys.stderr)
            try:
                result = exporter.export(feed, dt.datetime.now(dt.UTC), progress=progress)
            except LakeExportError as exc:
                progress.done()
                code = exit_code(exc)
                kind = "skipped" if isinstance(exc, FeedLocked) else "failed"
                print(f"export {feed.name}: {kind}: {exc}", file=sys.stderr)
                worst = max(worst, code, key=_SEVERITY.__getitem__)
                continue
            progress.done()
            print(describe(result))
    finally:
        exporter.client.close()
    return worst


def run_repair(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.yes and not args.rebuild:
        print("lakeexportd repair: --yes only goes with --rebuild", file=sys.stderr)
        return EX_USAGE
    if args.rebuild and not args.feeds:
        print("lakeexportd repair: --rebuild needs the feed names to rebuild", file=sys.stderr)
        return EX_USAGE
    try:
        feeds = _select(config, args.feeds, every=not args.feeds, active_only=False)
    except _UsageError as exc:
        print(f"lakeexportd repair: {exc}", file=sys.stderr)
        return EX_USAGE
    exporter = exporter_from_config(config)
    if args.rebuild:
        try:
            return _rebuild(exporter, feeds, dry_run=args.dry_run, yes=args.yes)
        finally:
            exporter.client.close()
    worst = EX_OK
    try:
        for feed in feeds:
            try:
                swept = exporter.repair(feed, dry_run=args.dry_run)
            except LakeExportError as exc:
                print(f"repair {feed.name}: failed: {exc}", file=sys.stderr)
                worst = max(worst, exit_code(exc), key=_SEVERITY.__getitem__)
                continue
            verb = "would remove" if args.dry_run else "removed"
            print(f"repair {feed.name}: {verb} {len(swept.removed)} unlisted files")
            for path in swept.removed:
                print(f"  {path}")
            if swept.kept:
                verb = "would keep" if args.dry_run else "kept"
                print(f"repair {feed.name}: {verb} {len(swept.kept)} unlisted files younger "
                      f"than lake.orphan_grace ({human_age(exporter.orphan_grace)}): a paused "
                      "writer may still commit them")
                for path, age in swept.kept:
                    print(f"  {path} (age {human_age(age)})")
            if isinstance(swept, DeltaRepair):
                worst = max(worst, _delta_lines(feed.name, swept, dry_run=args.dry_run),
                            key=_SEVERITY.__getitem__)
    finally:
        exporter.client.close()
    return worst


def _delta_lines(name: str, repaired: DeltaRepair, *, dry_run: bool) -> int:
    """The Delta part of a repair's report; exit 1 when foreign files need a look."""
    if repaired.summary is not None:
        verb = "would rewrite" if dry_run else "rewrote"
        print(f"repair {name}: {verb} _metadata.json from the Delta log (version "
              f"{repaired.delta_version}): it {repaired.summary}")
    for path in repaired.foreign:
        print(f"repair {name}: {path}: not written by lakeexportd and listed by no Delta "
              "commit; left alone: move it out of the table's folder")
    return EX_FAILED if repaired.foreign else EX_OK


def _rebuild(exporter: DataLakeExporter, feeds: list[Feed], *, dry_run: bool, yes: bool) -> int:
    """``repair --rebuild``: show each rebuilt document, ask, write."""
    worst = EX_OK

    def confirm(lines: list[str]) -> bool:
        return _ask(lines, "Write this _metadata.json?", dry_run=dry_run, yes=yes,
                    untouched="nothing written", refused="not written")

    for feed in feeds:
        try:
            rebuilt = exporter.rebuild(feed, confirm=confirm)
        except LakeExportError as exc:
            print(f"repair {feed.name}: failed: {exc}", file=sys.stderr)
            worst = max(worst, exit_code(exc), key=_SEVERITY.__getitem__)
            continue
        if rebuilt is not None:
            print(f"repair {feed.name}: wrote _metadata.json ({rebuilt.files} files listed)")
        elif not dry_run:
            worst = max(worst, EX_FAILED, key=_SEVERITY.__getitem__)
    return worst


def add_backfill_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("feed", metavar="FEED", help="the stream feed to backfill")
    parser.add_argument("--from", dest="start", required=True, metavar="TIME",
                        help="window start, exclusive: ISO time (UTC unless it has an offset) "
                        "or epoch milliseconds")
    parser.add_argument("--to", dest="end", required=True, metavar="TIME",
                        help="window end, inclusive (at most the feed's watermark)")
    parser.add_argument("--dry-run", action="store_true",
                        help="show which files would be replaced; change nothing")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def parse_time_ms(text: str) -> int:
    """``1736951400000`` or ``2025-01-15T14:30:00`` (UTC unless an offset is given) as epoch ms."""
    if text.strip().lstrip("-").isdigit():
        return int(text)
    try:
        return parse_timestamp_ms(text.strip())
    except ValueError:
        raise _UsageError(f"{text!r} is neither an ISO time (2025-01-15T14:30:00) nor epoch "
                          "milliseconds") from None


def _ask(lines: list[str], question: str, *, dry_run: bool, yes: bool, untouched: str,
         refused: str) -> bool:
    """Show what a command would write, then say whether to: never with --dry-run, always
    with --yes, else the answer on a terminal (no terminal: no)."""
    print("\n".join(lines))
    if dry_run:
        print(f"(--dry-run: {untouched})")
        return False
    if yes:
        return True
    if not sys.stdin.isatty():
        print(f"{refused}: no terminal to ask on; run again with --yes")
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def run_backfill(args: argparse.Namespace) -> int:
    from lakeexportd.lake.metadata_model import Window

    config = _load(args)
    try:
        (feed,) = _select(config, [args.feed], every=False, active_only=False)
        window = Window(parse_time_ms(args.start), parse_time_ms(args.end))
    except _UsageError as exc:
        print(f"lakeexportd backfill: {exc}", file=sys.stderr)
        return EX_USAGE

    def confirm(lines: list[str]) -> bool:
        return _ask(lines, "Backfill this window?", dry_run=args.dry_run, yes=args.yes,
                    untouched="nothing changed", refused="not done")

    exporter = exporter_from_config(config)
    try:
        result = exporter.backfill(feed, window, dt.datetime.now(dt.UTC), confirm=confirm)
    except LakeExportError as exc:
        print(f"backfill {feed.name}: failed: {exc}", file=sys.stderr)
        return exit_code(exc)
    finally:
        exporter.client.close()
    if result is None:
        return EX_OK if args.dry_run else EX_FAILED
    print(f"backfill {feed.name}: {result.window_rows} rows of the window from ksqlDB, "
          f"{result.rows - result.window_rows} kept from {len(result.plan.replaced)} replaced "
          f"file(s), in {result.files} new file(s); committed")
    return EX_OK
