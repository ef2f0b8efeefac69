from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from lakeexportd.errors import LakeStateError
from lakeexportd.lake import layout

RUN = dt.datetime(2025, 1, 15, 12, 0, 0, tzinfo=dt.UTC)


def test_feed_dirs_by_kind() -> None:
    """Streams and tables live in their own top-level folders; staging and lock are hidden."""
    root = Path("/lake")
    assert layout.feed_dir(root, "stream", "tx") == Path("/lake/streams/tx")
    assert layout.feed_dir(root, "table", "summary") == Path("/lake/tables/summary")
    assert layout.staging_dir(root, "summary") == Path("/lake/.staging/summary")
    assert layout.lock_path(Path("/lake/streams/tx")) == Path("/lake/streams/tx/.lock")
    assert layout.lock_path(Path("/b/streams/tx"), lease=True) == Path("/b/streams/tx/_lease.json")
    assert layout.metadata_path(Path("/f")) == Path("/f/_metadata.json")


@pytest.mark.parametrize("bad", ["", ".", "..", ".hidden", "a/b", "../x", "a\\b", "x" * 129, "é"])
def test_unsafe_feed_names_rejected(bad: str) -> None:
    """A feed name that could escape or hide its folder is a LakeStateError."""
    with pytest.raises(LakeStateError, match="cannot be used as a folder name"):
        layout.feed_dir(Path("/lake"), "stream", bad)


def test_partition_path_utc_from_ms_and_datetime() -> None:
    """Epoch ms and aware datetimes map to the same UTC day partition."""
    ms = 1736951400000  # 2025-01-15T14:30:00Z
    assert layout.partition_path(ms) == "year=2025/month=01/day=15"
    assert layout.partition_path(dt.datetime(2025, 1, 15, 23, 59, 59, 999000, tzinfo=dt.UTC)) == (
        "year=2025/month=01/day=15"
    )
    assert layout.partition_path(-1) == "year=1969/month=12/day=31"


def test_partition_path_in_feed_timezone() -> None:
    """The calendar is the feed's timezone: 23:30Z is the next day in Paris."""
    ts = dt.datetime(2025, 1, 15, 23, 30, tzinfo=dt.UTC)
    assert layout.partition_path(ts) == "year=2025/month=01/day=15"
    assert layout.partition_path(ts, "Europe/Paris") == "year=2025/month=01/day=16"
    assert layout.partition_path(ts, "America/New_York") == "year=2025/month=01/day=15"


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        # Spring forward in Paris (2025-03-30, 23 hours): offset +1 before, +2 after.
        (dt.datetime(2025, 3, 29, 22, 59, 59, tzinfo=dt.UTC), "day=29"),
        (dt.datetime(2025, 3, 29, 23, 0, 0, tzinfo=dt.UTC), "day=30"),
        (dt.datetime(2025, 3, 30, 21, 59, 59, tzinfo=dt.UTC), "day=30"),
        (dt.datetime(2025, 3, 30, 22, 0, 0, tzinfo=dt.UTC), "day=31"),
        # Fall back (2025-10-26, 25 hours).
        (dt.datetime(2025, 10, 25, 21, 59, 59, tzinfo=dt.UTC), "day=25"),
        (dt.datetime(2025, 10, 25, 22, 0, 0, tzinfo=dt.UTC), "day=26"),
        (dt.datetime(2025, 10, 26, 22, 59, 59, tzinfo=dt.UTC), "day=26"),
        (dt.datetime(2025, 10, 26, 23, 0, 0, tzinfo=dt.UTC), "day=27"),
    ],
)
def test_partition_path_across_dst_days(utc: dt.datetime, expected: str) -> None:
    """DST days (23 and 25 hours) start and end at local midnight."""
    assert layout.partition_path(utc, "Europe/Paris").endswith(expected)


def test_naive_datetime_and_unknown_timezone_rejected() -> None:
    """Naive event times and unknown zone names are errors, not silent UTC."""
    with pytest.raises(ValueError, match="timezone-aware"):
        layout.partition_path(dt.datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="unknown timezone"):
        layout.partition_path(0, "Mars/Olympus")


def test_partition_day_round_trip() -> None:
    """partition_day inverts day_partition and rejects other text."""
    day = dt.date(2024, 2, 29)
    assert layout.partition_day(layout.day_partition(day)) == day
    with pytest.raises(ValueError):
        layout.partition_day("year=2024/month=2/day=29")


def test_data_file_names_with_collision_and_part() -> None:
    """File names carry the run start in UTC, then _NN, then _partNNNN."""
    assert layout.data_file_name(RUN) == "data_20250115_120000.parquet"
    assert layout.data_file_name(RUN, collision=1) == "data_20250115_120000_01.parquet"
    assert layout.data_file_name(RUN, part=1) == "data_20250115_120000_part0001.parquet"
    assert layout.data_file_name(RUN, collision=2, part=12) == (
        "data_20250115_120000_02_part0012.parquet"
    )
    paris = RUN.astimezone(layout.zone("Europe/Paris"))
    assert layout.data_file_name(paris) == "data_20250115_120000.parquet"
    for name in ("data_20250115_120000.parquet", "data_20250115_120000_02_part0012.parquet"):
        assert layout.is_data_file_name(name)
    assert not layout.is_data_file_name(".data_20250115_120000.parquet.tmp")
    with pytest.raises(ValueError):
        layout.data_file_name(RUN, part=0)


def test_free_collision_skips_every_taken_suffix() -> None:
    """A second run in the same second gets _01, a third _02; other stamps do not count."""
    assert layout.free_collision(frozenset(), RUN) == 0
    taken = {"data_20250115_120000_part0001.parquet", "data_20250115_120000_part0002.parquet"}
    assert layout.free_collision(taken, RUN) == 1
    taken |= {"data_20250115_120000_01.parquet", "data_20250115_115959.parquet"}
    assert layout.free_collision(taken, RUN) == 2
    full = {layout.data_file_name(RUN, collision=c) for c in range(100)}
    with pytest.raises(LakeStateError, match="repair"):
        layout.free_collision(full, RUN)


def test_snapshot_and_version_names() -> None:
    """Snapshot files and version=vN dirs follow section 3; version numbers parse back."""
    assert layout.snapshot_file_name(RUN) == "snapshot_20250115_120000.parquet"
    assert layout.snapshot_file_name(RUN, part=3) == "snapshot_20250115_120000_part0003.parquet"
    assert layout.version_dir_name(12) == "version=v12"
    assert layout.version_number("version=v12") == 12
    assert layout.version_number("version=v0") is None
    assert layout.version_number("version=12") is None
    with pytest.raises(ValueError):
        layout.version_dir_name(0)


def test_temp_names_are_hidden_and_not_parquet() -> None:
    """Temp names start with a dot and never end in .parquet (reader globs would match)."""
    name = layout.temp_name("data_20250115_120000.parquet")
    assert name == ".data_20250115_120000.parquet.tmp"
    assert not name.endswith(".parquet") and layout.is_temp_name(name)


def test_modes_by_security_level() -> None:
    """raw is group-only; anonymized and aggregated are world-readable."""
    assert layout.modes("raw") == (0o750, 0o640)
    assert layout.modes("anonymized") == (0o755, 0o644)
    assert layout.modes("aggregated") == (0o755, 0o644)


def test_retention_cutoff_in_feed_timezone() -> None:
    """retention_days=7 on Jan 15 keeps Jan 8 onwards, counted in the feed's calendar."""
    now = dt.datetime(2025, 1, 15, 23, 30, tzinfo=dt.UTC)
    assert layout.retention_cutoff(now, 7) == dt.date(2025, 1, 8)
    assert layout.retention_cutoff(now, 7, "Europe/Paris") == dt.date(2025, 1, 9)


def test_run_start_of_reads_the_stamp_of_data_and_snapshot_names() -> None:
    """A file name gives back its run's start (UTC); other names give None."""
    start = dt.datetime(2025, 1, 15, 14, 30, 5, tzinfo=dt.UTC)
    assert layout.run_start_of(layout.data_file_name(start, collision=3, part=2)) == start
    assert layout.run_start_of(layout.snapshot_file_name(start)) == start
    assert layout.run_start_of("_metadata.json") is None
    assert layout.run_start_of(layout.temp_name(layout.data_file_name(start))) is None
