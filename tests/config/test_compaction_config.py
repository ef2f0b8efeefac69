"""`compaction: {after, target_file_size}` (DESIGN section 12): on by default for streams,
per feed or in `defaults`, `null` turns it off; every error names the file, key path and fix."""

from __future__ import annotations

from typing import Any

import pytest

from lakeexportd.config.load import parse_config
from lakeexportd.config.model import Compaction
from lakeexportd.errors import ConfigError
from lakeexportd.feeds.registry import feed_from_options, feed_options, fingerprint

FILE = "/srv/conf/lakeexportd.yaml"
LAKE = {"root": "/srv/lake"}
STREAM = {"name": "tx", "source": "TX", "kind": "stream"}
TABLE = {"name": "users", "source": "USERS", "kind": "table"}
MIB = 1024 * 1024


def parse(feeds: list[dict[str, Any]], **extra: Any) -> Any:
    return parse_config({"ksqldb": {"url": "http://localhost:8088"}, "lake": LAKE,
                         "logging": {"dir": "/var/log/lakeexportd"}, "feeds": feeds, **extra},
                        path=FILE, environ={})


def test_on_by_default_for_streams_off_for_tables_and_overridable() -> None:
    """Streams get after 1d / 256 MiB; defaults and feeds override; null is off. A table
    keeps the built-in value, unused (stream-only keys never make a table look changed)."""
    cfg = parse([STREAM, TABLE,
                 {**STREAM, "name": "big", "compaction": {"target_file_size": "1GiB"}},
                 {**STREAM, "name": "raw", "compaction": None}],
                defaults={"compaction": {"after": "2d", "target_file_size": "128MiB"}})
    assert {f.name: f.compaction for f in cfg.feeds} == {
        "tx": Compaction(2, 128 * MIB), "users": Compaction(),
        "big": Compaction(1, 1024 * MIB), "raw": None}
    assert parse([STREAM]).feeds[0].compaction == Compaction(1, 256 * MIB)


def test_the_registry_reads_compaction_back_and_keeps_old_fingerprints() -> None:
    """A registry entry reads back the same Feed (null included); the built-in default is
    left out of the entry, so entries written before compaction existed keep their
    fingerprint (and an operator's enable/disable)."""
    default, off, custom = parse([
        STREAM, {**STREAM, "name": "raw", "compaction": None},
        {**STREAM, "name": "big", "compaction": {"after": "3d", "target_file_size": "64MiB"}},
    ]).feeds
    assert "compaction" not in feed_options(default)
    assert feed_options(off)["compaction"] is None
    assert feed_options(custom)["compaction"] == {"after": "3d", "target_file_size": "64MiB"}
    for feed in (default, off, custom):
        assert feed_from_options(feed_options(feed), where="registry") == feed
    assert fingerprint(default) == fingerprint(parse([{**STREAM, "compaction": {
        "after": "1d", "target_file_size": "256MiB"}}]).feeds[0])


@pytest.mark.parametrize(("value", "message"), [
    ({"after": "36h"}, "$.feeds[0].compaction.after (feed 'tx'): '36h' is not a whole number "
     "of days: write whole days such as 1d"),
    ({"after": 1}, "$.feeds[0].compaction.after (feed 'tx'): duration 1 has no unit"),
    ({"target_file_size": 256}, "$.feeds[0].compaction.target_file_size (feed 'tx'): size 256 "
     "has no unit: write e.g. '256MiB'"),
    ({"target_file_size": "256 pages"}, "compaction.target_file_size (feed 'tx'): bad size "
     "'256 pages': a size needs a unit"),
    ({"target_file_size": "512KiB"}, "size '512KiB' is below 1MiB: use at least 1MiB"),
    ({"every": "1d"}, "$.feeds[0].compaction.every (feed 'tx'): unknown key 'every'"),
    ("1d", "$.feeds[0].compaction (feed 'tx'): expected a mapping"),
])
def test_a_bad_compaction_is_a_config_error(value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse([{**STREAM, "compaction": value}])
    assert str(info.value).startswith(FILE) and message in str(info.value)


def test_a_table_feed_refuses_compaction() -> None:
    """Each table version is written whole: `compaction` on a table is an error."""
    with pytest.raises(ConfigError, match=r"\$\.feeds\[0\]\.compaction \(feed 'users'\): "
                       r"`compaction` does not apply to a table: remove it"):
        parse([{**TABLE, "compaction": {"after": "1d"}}])
