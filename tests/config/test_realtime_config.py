"""`mode: realtime` and `rotate: {rows, bytes, age, idle}` (DESIGN 14, issue 15): parsed and
refused with the file, key path and fix; read back through the feed registry without
touching batch feeds' fingerprints; shown by `lakeexportd validate` and `feeds list`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lakeexportd.cli import main as cli_main
from lakeexportd.config.load import parse_config
from lakeexportd.config.model import BUILTIN, Rotate, Schedule, summarize
from lakeexportd.errors import ConfigError
from lakeexportd.feeds.registry import feed_from_options, feed_options, fingerprint

FILE = "/srv/conf/lakeexportd.yaml"
STREAM = {"name": "tx", "source": "TX", "kind": "stream"}
RT = {**STREAM, "mode": "realtime"}
TABLE = {"name": "users", "source": "USERS", "kind": "table"}
KIB, MIB = 1024, 1024 * 1024


def parse(feeds: list[dict[str, Any]], **extra: Any) -> Any:
    return parse_config({"ksqldb": {"url": "http://localhost:8088"},
                         "lake": {"root": "/srv/lake"}, "logging": {"dir": "/var/log/lx"},
                         "feeds": feeds, **extra}, path=FILE, environ={})


@pytest.mark.parametrize(("feed", "mode", "rotate"), [
    (STREAM, "batch", Rotate()),
    ({**STREAM, "mode": "batch"}, "batch", Rotate()),
    (RT, "realtime", Rotate(1_000_000, 128 * MIB, 60.0, 10.0)),
    ({**RT, "rotate": None}, "realtime", Rotate()),  # every key commented out
    ({**RT, "rotate": {}}, "realtime", Rotate()),
    ({**RT, "rotate": {"age": "5s"}}, "realtime", Rotate(age=5.0)),  # the rest: defaults
    ({**RT, "rotate": {"rows": 1, "bytes": "1KiB", "age": "100ms", "idle": "0.1s"}},
     "realtime", Rotate(1, KIB, 0.1, 0.1)),  # the smallest values allowed
    ({**RT, "rotate": {"rows": 50_000, "bytes": "64MiB", "age": "1h30m", "idle": "1.5s"}},
     "realtime", Rotate(50_000, 64 * MIB, 5400.0, 1.5)),
    ({**RT, "rotate": {"bytes": "1GB", "age": "2m", "idle": "500ms"}},
     "realtime", Rotate(bytes=1_000_000_000, age=120.0, idle=0.5)),  # GB: a power of 1000
    ({**RT, "format": "delta", "start": "now"}, "realtime", Rotate()),
])
def test_mode_and_rotate_parse(feed: dict[str, Any], mode: str, rotate: Rotate) -> None:
    parsed = parse([feed]).feeds[0]
    assert (parsed.mode, parsed.realtime, parsed.rotate) == (mode, mode == "realtime", rotate)


def _error(feed: dict[str, Any], **extra: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse([feed], **extra)
    return str(info.value)


WHERE = f"{FILE}: $.feeds[0]"


@pytest.mark.parametrize(("feed", "message"), [
    ({**STREAM, "mode": "stream"}, f"{WHERE}.mode (feed 'tx'): invalid value 'stream': use one "
     "of: batch | realtime"),
    ({**STREAM, "mode": None}, f"{WHERE}.mode (feed 'tx'): expected a string, got null: write "
     "a value (default 'batch')"),
    ({**TABLE, "mode": "realtime"}, f"{WHERE}.mode (feed 'users'): `mode` does not apply to a "
     "table: remove it (it is for streams)"),
    ({**TABLE, "rotate": {"rows": 5}}, f"{WHERE}.rotate (feed 'users'): `rotate` does not "
     "apply to a table: remove it (it is for streams)"),
    ({**STREAM, "rotate": {"rows": 5}}, f"{WHERE}.rotate (feed 'tx'): `rotate` is for `mode: "
     "realtime` feeds (a batch feed writes one file set per scheduled run): add `mode: "
     "realtime`, or remove `rotate:`"),
    ({**STREAM, "mode": "batch", "rotate": {"age": "5s"}}, f"{WHERE}.rotate (feed 'tx'): "
     "`rotate` is for `mode: realtime` feeds (a batch feed writes one file set per scheduled "
     "run): add `mode: realtime`, or remove `rotate:`"),
    ({**RT, "schedule": {"every": "1m"}}, f"{WHERE}.schedule (feed 'tx'): a `mode: realtime` "
     "feed has no schedule: its push query runs all the time and `rotate` says when files "
     "are committed: remove `schedule:` from this feed"),
    ({**RT, "schedule": {"cron": "* * * * *"}}, f"{WHERE}.schedule (feed 'tx'): a `mode: "
     "realtime` feed has no schedule"),
    ({**RT, "rotate": "5s"}, f"{WHERE}.rotate (feed 'tx'): expected a mapping, got a string "
     "'5s'"),
    ({**RT, "rotate": {"files": 3}}, f"{WHERE}.rotate.files (feed 'tx'): unknown key 'files'"),
    ({**RT, "rotate": {"every": "5s"}}, f"{WHERE}.rotate.every (feed 'tx'): unknown key "
     "'every'"),
    ({**RT, "rotate": {"rows": 0}}, f"{WHERE}.rotate.rows (feed 'tx'): 0 is too small: use a "
     "number >= 1"),
    ({**RT, "rotate": {"rows": "1k"}}, f"{WHERE}.rotate.rows (feed 'tx'): expected a whole "
     "number, got a string '1k'"),
    ({**RT, "rotate": {"rows": True}}, f"{WHERE}.rotate.rows (feed 'tx'): expected a whole "
     "number, got a boolean True"),
    ({**RT, "rotate": {"bytes": "512B"}}, f"{WHERE}.rotate.bytes (feed 'tx'): size '512B' is "
     "below 1KiB: use at least 1KiB"),
    ({**RT, "rotate": {"bytes": 4096}}, f"{WHERE}.rotate.bytes (feed 'tx'): size 4096 has no "
     "unit"),
    ({**RT, "rotate": {"bytes": "lots"}}, f"{WHERE}.rotate.bytes (feed 'tx'): bad size 'lots'"),
    ({**RT, "rotate": {"age": "50ms"}}, f"{WHERE}.rotate.age (feed 'tx'): '50ms' is shorter "
     "than 0.1s: write e.g. `5s` (each rotation is a commit of _metadata.json)"),
    ({**RT, "rotate": {"idle": "99ms"}}, f"{WHERE}.rotate.idle (feed 'tx'): '99ms' is shorter "
     "than 0.1s"),
    ({**RT, "rotate": {"age": "0s"}}, f"{WHERE}.rotate.age (feed 'tx'): duration '0s' must be "
     "greater than zero"),
    ({**RT, "rotate": {"idle": "-2s"}}, f"{WHERE}.rotate.idle (feed 'tx'): duration '-2s' is "
     "negative"),
    ({**RT, "rotate": {"age": 5}}, f"{WHERE}.rotate.age (feed 'tx'): duration 5 has no unit: "
     "write e.g. '5s'"),
])
def test_bad_mode_and_rotate_name_the_key_and_the_fix(feed: dict[str, Any],
                                                      message: str) -> None:
    assert _error(feed).startswith(message)


def test_mode_and_rotate_are_feed_keys_not_defaults() -> None:
    """A realtime feed is chosen one by one: `defaults` takes neither key."""
    for key, value in (("mode", "realtime"), ("rotate", {"age": "5s"})):
        text = _error(STREAM, defaults={key: value})
        assert text.startswith(f"{FILE}: $.defaults.{key}: unknown key {key!r}"), text


def _digest(options: dict[str, Any]) -> str:
    """A registry fingerprint computed by hand: sha256 of the sorted, compact JSON."""
    text = json.dumps(options, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# What the registry stored for these batch feeds before realtime feeds existed (written out
# here, not computed by the code under test).
BATCH_STREAM = {"name": "tx", "source": "TX", "kind": "stream", "schedule": {"every": "5m"},
                "batch_size": 10000, "settle_delay": "30s", "start": "earliest",
                "security": "raw", "max_rows_per_file": 1000000, "max_open_partitions": 32,
                "timezone": "UTC", "format": "parquet", "enabled": True}
BATCH_CRON = {**BATCH_STREAM, "name": "cr", "schedule": {"cron": "*/5 * * * *"},
              "settle_delay": "1m", "format": "delta", "owner": "ops", "tags": ["a"]}
BATCH_TABLE = {"name": "users", "source": "USERS", "kind": "table",
               "schedule": {"every": "1h"}, "batch_size": 10000, "retention_versions": 7,
               "security": "raw", "max_rows_per_file": 1000000, "format": "parquet",
               "enabled": True}


def test_batch_feeds_keep_their_registry_form_and_fingerprint() -> None:
    """Entries written before realtime existed keep their fingerprint (so an operator's
    enable/disable of a config feed survives the upgrade); `mode: batch` written out is the
    same feed; neither `mode` nor `rotate` shows in a batch feed's entry."""
    stream, explicit, cron, table = parse([
        STREAM, {**STREAM, "name": "tx2", "mode": "batch"},
        {**STREAM, "name": "cr", "schedule": {"cron": "*/5 * * * *"}, "settle_delay": "1m",
         "format": "delta", "owner": "ops", "tags": ["a"]},
        {**TABLE, "schedule": {"every": "1h"}},
    ]).feeds
    for feed, expected in ((stream, BATCH_STREAM), (cron, BATCH_CRON), (table, BATCH_TABLE)):
        assert feed_options(feed) == expected
        assert fingerprint(feed) == _digest(expected)
        assert feed_from_options(expected, where="registry") == feed
    assert feed_options(explicit) == {**BATCH_STREAM, "name": "tx2"}
    assert fingerprint(explicit) == _digest({**BATCH_STREAM, "name": "tx2"})


def test_a_realtime_feed_round_trips_through_the_registry() -> None:
    """Its entry has `mode` and the whole `rotate`, no `schedule`; it reads back the same
    Feed, also when the config's `defaults.schedule` is not the built-in one."""
    feed = parse([{**RT, "rotate": {"rows": 500, "bytes": "8MiB", "age": "5s",
                                    "idle": "1500ms"}}],
                 defaults={"schedule": {"every": "1m"}, "settle_delay": "5s"}).feeds[0]
    expected = {**BATCH_STREAM, "settle_delay": "5s", "mode": "realtime",
                "rotate": {"rows": 500, "bytes": "8MiB", "age": "5s", "idle": "1s500ms"}}
    del expected["schedule"]
    assert feed_options(feed) == expected
    assert fingerprint(feed) == _digest(expected)
    back = feed_from_options(feed_options(feed), where="registry")
    assert back == feed
    assert fingerprint(back) == fingerprint(feed)
    # JSON as the registry file holds it, read back as the registry reads it.
    stored = json.loads(json.dumps(feed_options(feed)))
    assert feed_from_options(stored, where="registry") == feed
    # A realtime feed with every rotate default still writes them out, and reads back.
    plain = parse([RT]).feeds[0]
    assert feed_options(plain)["rotate"] == {"rows": 1_000_000, "bytes": "128MiB",
                                             "age": "1m", "idle": "10s"}
    assert feed_from_options(feed_options(plain), where="registry") == plain


def test_fingerprints_follow_mode_and_rotate_but_not_the_unused_schedule() -> None:
    """A switch batch <-> realtime and a rotate change are YAML changes (new fingerprint,
    a changed Feed); `defaults.schedule`, which a realtime feed does not use, is neither:
    a reload that edits it must not restart a realtime feed's query."""
    batch, rt, fast = parse([STREAM, {**RT, "name": "rt"},
                             {**RT, "name": "fast", "rotate": {"age": "5s"}}]).feeds
    assert fingerprint(batch) != fingerprint(parse([RT]).feeds[0])
    assert fingerprint(parse([{**RT, "name": "fast"}]).feeds[0]) != fingerprint(fast)
    assert parse([{**RT, "name": "fast"}]).feeds[0] != fast
    for schedule in ({"every": "1m"}, {"cron": "0 0 31 2 *"}):
        again = parse([{**RT, "name": "rt"}], defaults={"schedule": schedule}).feeds[0]
        assert again == rt, schedule
        assert fingerprint(again) == fingerprint(rt)
        assert again.schedule == BUILTIN.schedule == Schedule(every=300.0)
    # ...while a batch feed does take the defaults' schedule.
    assert parse([STREAM], defaults={"schedule": {"every": "1m"}}).feeds[0].schedule == \
        Schedule(every=60.0)


def test_summarize_prints_rotate_for_realtime_feeds() -> None:
    cfg = parse([STREAM, {**RT, "name": "live", "rotate": {"rows": 100, "bytes": "64MiB",
                                                             "age": "5s", "idle": "2s"}},
                 {**RT, "name": "ldelta", "format": "delta"}, TABLE])
    lines = summarize(cfg)
    by_feed = {line.split()[0]: line for line in lines[2:]}
    assert "every 5m" in by_feed["tx"] and "realtime" not in by_feed["tx"]
    assert "realtime (rotate rows 100, bytes 64MiB, age 5s, idle 2s)" in by_feed["live"]
    assert "every" not in by_feed["live"]
    assert "realtime (rotate rows 1,000,000, bytes 128MiB, age 1m, idle 10s)" in \
        by_feed["ldelta"] and by_feed["ldelta"].rstrip().endswith("raw  delta")
    assert "every 5m" in by_feed["users"]


def test_validate_and_feeds_list_show_realtime_feeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI: `validate` prints each realtime feed's rotation and no cron warning for a
    `defaults.schedule` it does not use; `feeds list` (after `feeds sync`) says realtime, not a schedule."""
    config = tmp_path / "lakeexportd.yaml"
    config.write_text(yaml.safe_dump({
        "ksqldb": {"url": "http://127.0.0.1:9"}, "lake": {"root": str(tmp_path / "lake")},
        "logging": {"dir": str(tmp_path / "logs")},
        "defaults": {"schedule": {"cron": "0 0 31 2 *"}},  # never fires: only batch feeds care
        "feeds": [{**RT, "rotate": {"age": "5s", "idle": "1s"}},
                  {**STREAM, "name": "daily", "schedule": {"every": "1d"}}],
    }))
    assert cli_main(["validate", "-c", str(config)]) == 0
    out, err = capsys.readouterr()
    assert "realtime (rotate rows 1,000,000, bytes 128MiB, age 5s, idle 1s)" in out, out
    assert "every 1d" in out
    assert "matches no date" not in err, err
    assert cli_main(["feeds", "sync", "-c", str(config)]) == 0
    assert cli_main(["feeds", "list", "-c", str(config)]) == 0
    out = capsys.readouterr().out.split("\nFEED", 1)[1]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
    assert rows["tx"][5] == "realtime", out
    assert rows["daily"][5:7] == ["every", "1d"], out
