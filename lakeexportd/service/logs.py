"""Logging: structlog events as JSON lines in monthly files, and on stderr.

``configure(settings)`` is called once by the CLI. Every event goes to stderr (readable on a
terminal, JSON lines otherwise, e.g. under systemd's journal) and to one file under
``logging.dir`` chosen by its name:

    export.*    -> export_YYYY_MM.log      one export.finished / export.failed line per run
    metadata.*  -> metadata_YYYY_MM.log    metadata commits and repairs
    anything else (feed.*, config.*, daemon.*, library warnings) -> feed_YYYY_MM.log

The month is the event's own (UTC), so the file changes at the first event of a new month;
files of months older than ``keep_months`` are deleted then. stdlib ``logging`` carries the
events, so library loggers (httpx, apscheduler) land in the same places, turned down to WARNING:
httpx would otherwise log every request. APScheduler's warnings become ``scheduler.*`` events
with the feed named (``scheduler.run_missed``, ``scheduler.run_skipped``).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
import time
from pathlib import Path
from typing import IO, Final

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from lakeexportd.config.model import LoggingSettings

CATEGORIES: Final = ("export", "feed", "metadata")
QUIET_LOGGERS: Final = ("httpx", "httpcore", "hpack", "h2", "apscheduler")
_FILE_NAME: Final = re.compile(r"(export|feed|metadata)_(\d{4})_(\d{2})\.log")
# Keys whose values are never logged, whatever code passes them: a last line of defence
# behind config.Secret, which already prints as ***.
_SECRET_KEYS: Final = re.compile(r"pass(word)?|secret|token|authorization|auth", re.IGNORECASE)


def category(event: object) -> str:
    """The file an event goes to, from its dotted name."""
    if isinstance(event, str):
        head = event.split(".", 1)[0]
        if head in ("export", "metadata"):
            return head
    return "feed"


def month_index(moment: dt.datetime) -> int:
    return moment.year * 12 + moment.month - 1


def file_name(kind: str, moment: dt.datetime) -> str:
    return f"{kind}_{moment:%Y_%m}.log"


def expired_files(directory: Path, now: dt.datetime, keep_months: int) -> list[Path]:
    """Monthly log files more than ``keep_months`` months old (the current month counts)."""
    oldest_kept = month_index(now) - keep_months + 1
    expired = []
    for path in directory.iterdir():
        match = _FILE_NAME.fullmatch(path.name)
        if match and int(match.group(2)) * 12 + int(match.group(3)) - 1 < oldest_kept:
            expired.append(path)
    return sorted(expired)


class MonthlyFileHandler(logging.Handler):
    """Writes each record to ``<kind>_YYYY_MM.log`` for its category and month (UTC)."""

    def __init__(self, directory: Path, *, keep_months: int = 12) -> None:
        super().__init__()
        self.directory = directory
        self.keep_months = keep_months
        self._open: dict[str, tuple[str, IO[str]]] = {}
        self._month: int | None = None
        self._failing_since: float | None = None  # when writing started to fail, for warnings
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._warn(exc)

    def _warn(self, exc: BaseException) -> None:
        """One line on stderr when log files stop working (then at most every 10 minutes)."""
        now = time.monotonic()
        if self._failing_since is not None and now - self._failing_since < 600:
            return
        self._failing_since = now
        sys.stderr.write(
            f"lakeexportd: cannot write log files in {self.directory} ({exc}); events go to "
            "stderr only until it works again (check logging.dir and its permissions)\n"
        )
        sys.stderr.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._emit(record)
            self._failing_since = None
        except OSError as exc:  # a full or read-only disk must never break an export
            for _, stream in self._open.values():  # reopen next time: the disk may be back
                try:
                    stream.close()
                except OSError:
                    pass
            self._open.clear()
            self._warn(exc)
        except Exception:
            self.handleError(record)

    def _emit(self, record: logging.LogRecord) -> None:
        moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
        if self._month != month_index(moment):
            self._month = month_index(moment)
            self._purge(moment)
        kind = category(record.msg.get("event") if isinstance(record.msg, dict) else None)
        stream = self._stream(kind, file_name(kind, moment))
        stream.write(self.format(record) + "\n")
        stream.flush()

    def _stream(self, kind: str, name: str) -> IO[str]:
        current = self._open.get(kind)
        if current is not None and current[0] == name:
            return current[1]
        if current is not None:
            current[1].close()
        self.directory.mkdir(parents=True, exist_ok=True)
        stream = open(self.directory / name, "a", encoding="utf-8")  # noqa: SIM115
        self._open[kind] = (name, stream)
        return stream

    def _purge(self, now: dt.datetime) -> None:
        for path in expired_files(self.directory, now, self.keep_months):
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self.acquire()
        try:
            for _, stream in self._open.values():
                stream.close()
            self._open.clear()
        finally:
            self.release()
        super().close()


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in event_dict:
        if key != "event" and _SECRET_KEYS.search(key):
            event_dict[key] = "***"
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]


# APScheduler names a job in its messages as `job "orders (trigger: ..., next run at: ...)"`:
# the job id is the feed's name.
_APSCHEDULER_JOB: Final = re.compile(r'job "([^"\s]+) \(trigger')
_APSCHEDULER_EVENTS: Final = (
    ("was missed by", "scheduler.run_missed"),
    ("maximum number of running instances", "scheduler.run_skipped"),
    ("raised an exception", "scheduler.job_failed"),
)


def scheduler_events(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    """APScheduler's own records as events: a stable name, the feed, its text as ``detail``."""
    record = event_dict.get("_record")
    if record is None or not record.name.startswith("apscheduler"):
        return event_dict
    text = str(event_dict.get("event", ""))
    match = _APSCHEDULER_JOB.search(text)
    if match:
        event_dict.setdefault("feed", match[1])
    event_dict["detail"] = text
    event_dict["event"] = next((event for phrase, event in _APSCHEDULER_EVENTS if phrase in text),
                               "scheduler.message")
    return event_dict


def _formatter(renderer: Processor) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder(),
                           scheduler_events],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )


def json_renderer() -> Processor:
    return structlog.processors.JSONRenderer(default=str)


_installed: list[logging.Handler] = []


def configure(
    settings: LoggingSettings | None,
    *,
    stderr: IO[str] | None = None,
    human: bool | None = None,
) -> MonthlyFileHandler | None:
    """Route structlog and stdlib logging to stderr and (with ``settings``) monthly files.

    ``human`` picks the readable stderr format; by default it is used on a terminal only.
    Calling it again replaces what the previous call installed.
    """
    stream = stderr if stderr is not None else sys.stderr
    if human is None:
        human = stream.isatty()
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
        handler.close()
    _installed.clear()

    console = logging.StreamHandler(stream)
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=False) if human else json_renderer()
    )
    console.setFormatter(_formatter(renderer))
    _installed.append(console)
    files = None
    if settings is not None:
        files = MonthlyFileHandler(settings.dir, keep_months=settings.keep_months)
        files.setFormatter(_formatter(json_renderer()))
        _installed.append(files)
    for handler in _installed:
        root.addHandler(handler)
    level = logging.getLevelName((settings.level if settings else "info").upper())
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))

    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: tests swap the configuration (capture_logs) after loggers exist.
        cache_logger_on_first_use=False,
    )
    return files


def events_to_stderr() -> None:
    """One-shot commands: structlog's default rendering, on stderr (looked up at each event,
    so a swapped ``sys.stderr`` is followed), leaving stdout to the command's results."""
    structlog.configure(logger_factory=lambda *args: structlog.PrintLogger(sys.stderr))


def unconfigure() -> None:
    """Undo ``configure`` (tests)."""
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
        handler.close()
    _installed.clear()
    root.setLevel(logging.WARNING)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    structlog.reset_defaults()

