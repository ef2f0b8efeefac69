"""Where things live in the lake (DESIGN.md section 3): pure functions from feed and time to paths.

Nothing here touches the disk: the lake's storage (``lake.storage``) does.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lakeexportd.errors import LakeStateError

Kind = Literal["stream", "table"]
Security = Literal["raw", "anonymized", "aggregated"]

METADATA_NAME = "_metadata.json"
LOCK_NAME = ".lock"
LEASE_NAME = "_lease.json"  # the feed's lock on object stores (DESIGN section 11)
STAGING_DIR = ".staging"
_KIND_DIRS: dict[str, str] = {"stream": "streams", "table": "tables"}
_MODES: dict[str, tuple[int, int]] = {
    "raw": (0o750, 0o640),
    "anonymized": (0o755, 0o644),
    "aggregated": (0o755, 0o644),
}

# Feed names become directory names: no separators, no leading dot (dot names are not data).
_FEED_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_PARTITION = re.compile(r"year=(\d{4})/month=(\d{2})/day=(\d{2})")
# ``_cNNNN``: a compaction's output (``lake/compaction.py``), never an export's name.
_DATA_NAME = re.compile(
    r"data_(\d{8}_\d{6})(?:(?:_(\d{2}))?(?:_part(\d{4}))?|_c(\d{4}))\.parquet")
_SNAPSHOT_NAME = re.compile(r"snapshot_(\d{8}_\d{6})(?:_part(\d{4}))?\.parquet")
_VERSION_DIR = re.compile(r"version=v([1-9]\d*)")
MAX_COLLISION = 99
MAX_PART = 9999


def check_feed_name(feed: str) -> str:
    """Return ``feed`` if it is safe as one directory name, else raise ``LakeStateError``."""
    if not _FEED_NAME.fullmatch(feed) or feed in (".", ".."):
        raise LakeStateError(
            f"feed name {feed!r} cannot be used as a folder name in the lake: use letters, "
            "digits, '_', '-' and '.', not starting with '.' (at most 128 characters)"
        )
    return feed


def feed_dir(root: Path, kind: Kind, feed: str) -> Path:
    """``<root>/streams/<feed>`` or ``<root>/tables/<feed>``."""
    return root / _KIND_DIRS[kind] / check_feed_name(feed)


def staging_dir(root: Path, feed: str) -> Path:
    """``<root>/.staging/<feed>``: where a table version is built before it is renamed in."""
    return root / STAGING_DIR / check_feed_name(feed)


def lock_path(feed_directory: Path, *, lease: bool = False) -> Path:
    """``.lock`` (flock, local lakes) or ``_lease.json`` (a lease object, object stores)."""
    return feed_directory / (LEASE_NAME if lease else LOCK_NAME)


def metadata_path(feed_directory: Path) -> Path:
    return feed_directory / METADATA_NAME


def modes(security: Security) -> tuple[int, int]:
    """(directory mode, file mode) for a feed's security level."""
    return _MODES[security]


def zone(timezone: str | dt.tzinfo | None) -> dt.tzinfo:
    """A tzinfo from an IANA name (``None`` means UTC); an unknown name is a ``ValueError``."""
    if timezone is None:
        return dt.UTC
    if isinstance(timezone, dt.tzinfo):
        return timezone
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {timezone!r} (use an IANA name)") from exc


def event_day(event_time: dt.datetime | int, timezone: str | dt.tzinfo | None = None) -> dt.date:
    """The calendar day of an event (epoch milliseconds or an aware datetime) in ``timezone``."""
    if isinstance(event_time, int):
        event_time = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=event_time)
    elif event_time.tzinfo is None:
        raise ValueError("event times must be timezone-aware (naive datetimes are ambiguous)")
    return event_time.astimezone(zone(timezone)).date()


def day_partition(day: dt.date) -> str:
    """``year=YYYY/month=MM/day=DD``."""
    return f"year={day.year:04d}/month={day.month:02d}/day={day.day:02d}"


def partition_path(
    event_time: dt.datetime | int, timezone: str | dt.tzinfo | None = None
) -> str:
    """The day partition (relative to the feed dir) of one event."""
    return day_partition(event_day(event_time, timezone))


def partition_day(partition: str) -> dt.date:
    """Inverse of ``day_partition``; anything else is a ``ValueError``."""
    m = _PARTITION.fullmatch(partition)
    if not m:
        raise ValueError(f"{partition!r} is not a year=YYYY/month=MM/day=DD partition")
    return dt.date(int(m[1]), int(m[2]), int(m[3]))


def retention_cutoff(
    now: dt.datetime, days: int, timezone: str | dt.tzinfo | None = None
) -> dt.date:
    """The oldest day kept: partitions before it are dropped (today counts as 0 days old)."""
    if days < 0:
        raise ValueError(f"retention_days must be >= 0, got {days}")
    return event_day(now, timezone) - dt.timedelta(days=days)


def run_stamp(run_start: dt.datetime) -> str:
    """``YYYYMMDD_HHMMSS`` of the run's start in UTC."""
    if run_start.tzinfo is None:
        raise ValueError("run start must be timezone-aware")
    return run_start.astimezone(dt.UTC).strftime("%Y%m%d_%H%M%S")


def _suffixes(collision: int, part: int | None) -> str:
    if not 0 <= collision <= MAX_COLLISION:
        raise ValueError(f"collision suffix must be 0..{MAX_COLLISION}, got {collision}")
    text = f"_{collision:02d}" if collision else ""
    if part is not None:
        if not 1 <= part <= MAX_PART:
            raise ValueError(f"part number must be 1..{MAX_PART}, got {part}")
        text += f"_part{part:04d}"
    return text


def data_file_name(run_start: dt.datetime, *, collision: int = 0, part: int | None = None) -> str:
    """``data_YYYYMMDD_HHMMSS[_NN][_partNNNN].parquet``; all files of one run share ``_NN``."""
    return f"data_{run_stamp(run_start)}{_suffixes(collision, part)}.parquet"


def compacted_file_name(compaction_start: dt.datetime, number: int) -> str:
    """``data_YYYYMMDD_HHMMSS_cNNNN.parquet``: output ``number`` of a compaction started then.

    A ``data_`` name (cleanup, rebuild and readers treat it as data) that no export can take:
    exports write ``_NN`` and ``_partNNNN`` suffixes, never ``_c``."""
    if not 1 <= number <= MAX_PART:
        raise ValueError(f"compacted file number must be 1..{MAX_PART}, got {number}")
    return f"data_{run_stamp(compaction_start)}_c{number:04d}.parquet"


def is_compacted_file_name(name: str) -> bool:
    m = _DATA_NAME.fullmatch(name)
    return m is not None and m[4] is not None


def snapshot_file_name(run_start: dt.datetime, *, part: int | None = None) -> str:
    """``snapshot_YYYYMMDD_HHMMSS[_partNNNN].parquet``."""
    return f"snapshot_{run_stamp(run_start)}{_suffixes(0, part)}.parquet"


def run_start_of(name: str) -> dt.datetime | None:
    """The run start (UTC, whole seconds) a data or snapshot file's name carries; ``None``
    for any other name."""
    m = _DATA_NAME.fullmatch(name) or _SNAPSHOT_NAME.fullmatch(name)
    return dt.datetime.strptime(m[1], "%Y%m%d_%H%M%S").replace(tzinfo=dt.UTC) if m else None


def is_data_file_name(name: str) -> bool:
    return _DATA_NAME.fullmatch(name) is not None


def is_snapshot_file_name(name: str) -> bool:
    return _SNAPSHOT_NAME.fullmatch(name) is not None


def data_collision(name: str, run_start: dt.datetime) -> int | None:
    """The ``_NN`` of ``name`` if it is a data file of a run started at ``run_start``."""
    m = _DATA_NAME.fullmatch(name)
    if not m or m[1] != run_stamp(run_start) or m[4] is not None:
        return None
    return int(m[2] or 0)


def free_collision(existing: set[str] | frozenset[str], run_start: dt.datetime) -> int:
    """The smallest ``_NN`` no file in ``existing`` uses for this run stamp."""
    taken = {c for c in (data_collision(n, run_start) for n in existing) if c is not None}
    for candidate in range(MAX_COLLISION + 1):
        if candidate not in taken:
            return candidate
    raise LakeStateError(
        f"more than {MAX_COLLISION + 1} runs started at {run_stamp(run_start)} wrote to one "
        "partition; run `lakeexportd repair` to remove files of interrupted runs"
    )


def version_dir_name(version: int) -> str:
    """``version=vN``."""
    if version < 1:
        raise ValueError(f"table versions start at 1, got {version}")
    return f"version=v{version}"


def version_number(name: str) -> int | None:
    """N of ``version=vN``, or ``None`` for any other name."""
    m = _VERSION_DIR.fullmatch(name)
    return int(m[1]) if m else None


def temp_name(name: str) -> str:
    """``.<name>.tmp``: hidden from every reader and never matching ``*.parquet``."""
    return f".{name}.tmp"


def retired_name(name: str) -> str:
    """``.<name>.retired``: a compaction input kept for its grace, hidden from ``*.parquet``
    globs (local lakes rename inputs to it right after the swap)."""
    return f".{name}.retired"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")
