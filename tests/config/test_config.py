"""Tests for lakeexportd.config.model: defaults, overrides, durations, secrets, paths, and bad configs."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from lakeexportd.cli import commands as cli
from lakeexportd.config import model as config
from lakeexportd.config.durations import format_duration, parse_duration
from lakeexportd.config.load import default_config_path, load_config, parse_config
from lakeexportd.config.model import Config, Feed, Schedule, Secret
from lakeexportd.errors import EX_CONFIG, ConfigError

REPO = Path(__file__).resolve().parents[2]
BAD_CONFIGS = sorted((Path(__file__).parents[1] / "data" / "bad_configs").glob("*.yaml"))
CONFIG_FILE = "/srv/conf/lakeexportd.yaml"


def minimal(**extra: Any) -> dict[str, Any]:
    """A small valid document; keyword arguments replace or add top-level sections."""
    data: dict[str, Any] = {
        "ksqldb": {"url": "http://localhost:8088"},
        "lake": {"root": "lake"},
        "feeds": [{"name": "orders", "source": "ORDERS", "kind": "stream"}],
    }
    data.update(extra)
    return data


def parse(data: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    return parse_config(data, path=CONFIG_FILE, environ=environ or {})


def one_feed(**keys: Any) -> Feed:
    feed = {"name": "orders", "source": "ORDERS", "kind": "stream", **keys}
    return parse(minimal(feeds=[feed])).feeds[0]


# --- defaults and overrides -------------------------------------------------------------------


def test_defaults_match_the_design() -> None:
    """A minimal file gets every default that DESIGN.md section 7 lists."""
    cfg = parse(minimal())
    assert cfg.path == Path(CONFIG_FILE)
    k = cfg.ksqldb
    assert (k.url, k.username, k.password) == ("http://localhost:8088", None, None)
    assert (k.connect_timeout, k.read_timeout, k.max_retries, k.http2, k.api) == (
        10.0, 300.0, 5, False, "auto")
    assert (k.tls.verify, k.tls.ca_file, k.tls.cert_file, k.tls.key_file) == (
        True, None, None, None)
    s = cfg.scheduler
    assert (s.workers, s.jitter, s.stop_grace, s.lock_wait) == (4, 0.0, 30.0, 10.0)
    assert (cfg.metrics.host, cfg.metrics.port) == ("127.0.0.1", 9464)
    assert (cfg.logging.level, cfg.logging.keep_months) == ("info", 12)
    assert cfg.logging.dir == Path("/srv/conf/lake/logs")
    feed = cfg.feeds[0]
    assert feed == Feed(name="orders", source="ORDERS", kind="stream",
                        schedule=Schedule(every=300.0), batch_size=10_000,
                        retention_versions=7, settle_delay=30.0, start="earliest",
                        security="raw", max_rows_per_file=1_000_000, max_open_partitions=32,
                        event_time=None, timezone="UTC", retention_days=None, enabled=True)


def test_defaults_section_applies_to_every_feed() -> None:
    """Values in `defaults` reach feeds that do not set them."""
    cfg = parse(minimal(defaults={"schedule": {"every": "1m"}, "batch_size": 500,
                                  "security": "anonymized", "settle_delay": "5s"}))
    feed = cfg.feeds[0]
    assert (feed.schedule, feed.batch_size, feed.security, feed.settle_delay) == (
        Schedule(every=60.0), 500, "anonymized", 5.0)


def test_feed_keys_override_defaults() -> None:
    """A feed's own keys win over `defaults`, and its schedule replaces the default one."""
    cfg = parse(minimal(
        defaults={"schedule": {"every": "1m"}, "batch_size": 500, "retention_days": 30},
        feeds=[{"name": "orders", "source": "ORDERS", "kind": "stream", "batch_size": 7,
                "schedule": {"cron": "*/5 * * * *"}, "retention_days": None,
                "timezone": "Europe/Paris", "event_time": "order_ts", "start": "now",
                "enabled": False}],
    ))
    feed = cfg.feeds[0]
    assert feed.batch_size == 7
    assert feed.schedule == Schedule(cron="*/5 * * * *")
    assert feed.retention_days is None
    assert feed.timezone == "Europe/Paris" and feed.tzinfo.key == "Europe/Paris"
    assert (feed.event_time, feed.start, feed.enabled) == ("ORDER_TS", "now", False)


def test_kind_specific_defaults_do_not_touch_the_other_kind() -> None:
    """Stream-only defaults leave table feeds at built-in values, so reload diffs stay quiet."""
    feeds = [{"name": "t", "source": "T", "kind": "table"},
             {"name": "s", "source": "S", "kind": "stream"}]
    plain = parse(minimal(feeds=feeds))
    tuned = parse(minimal(feeds=feeds, defaults={"settle_delay": "1m", "timezone": "Asia/Tokyo",
                                                 "retention_versions": 2}))
    assert tuned.feeds[0] == dataclasses.replace(plain.feeds[0], retention_versions=2)
    assert tuned.feeds[1].retention_versions == 7 and tuned.feeds[1].settle_delay == 60.0


def test_source_is_upper_cased_like_ksqldb() -> None:
    """Unquoted ksqlDB identifiers are case-insensitive; the stored source is upper case."""
    assert one_feed(source="transaction_stream").source == "TRANSACTION_STREAM"


def test_feed_name_rule_accepts_lowercase_digits_underscore() -> None:
    """Names of 1-63 characters, lowercase letter first, then [a-z0-9_], are accepted."""
    assert one_feed(name="a").name == "a"
    assert one_feed(name="tx_2025_eu").name == "tx_2025_eu"
    assert one_feed(name="a" * 63).name == "a" * 63


def test_metrics_listen_is_split_into_host_and_port() -> None:
    """metrics.listen accepts host:port and bracketed IPv6."""
    cfg = parse(minimal(metrics={"listen": "[::1]:9100"}))
    assert (cfg.metrics.listen, cfg.metrics.host, cfg.metrics.port) == ("[::1]:9100", "::1", 9100)


def test_empty_sections_read_as_defaults() -> None:
    """A section whose keys are all commented out (YAML null) means "all defaults"."""
    cfg = parse(minimal(scheduler=None, metrics=None, logging=None, defaults=None))
    assert cfg.scheduler == config.SchedulerSettings() and cfg.defaults == config.FeedDefaults()
    assert parse(minimal(feeds=None)).feeds == ()


def test_models_are_frozen() -> None:
    """A running export can keep its Feed: assigning to a field fails."""
    cfg = parse(minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.feeds[0].batch_size = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ksqldb.url = "http://elsewhere"  # type: ignore[misc]


def test_feeds_are_hashable_and_diffable() -> None:
    """Equal feeds compare and hash equal, so a reload can diff old and new by set operations."""
    old = parse(minimal()).feeds
    new = parse(minimal(feeds=[{"name": "orders", "source": "ORDERS", "kind": "stream"},
                               {"name": "users", "source": "USERS", "kind": "table"}])).feeds
    changed = one_feed(batch_size=5)
    assert set(new) - set(old) == {new[1]}
    assert changed != old[0] and hash(old[0]) == hash(parse(minimal()).feeds[0])
    assert parse(minimal()).feed("orders") == old[0]


# --- durations and cron -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2.0), ("5m", 300.0), ("1h", 3600.0), ("1d", 86400.0),
     ("1.5s", 1.5), ("1h30m", 5400.0), ("0s", 0.0), (" 10s ", 10.0), ("90m", 5400.0)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    """Each written duration means the expected number of seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "s", "-1s", "1w", "1.s", "ms5"])
def test_bad_durations_are_refused(text: str) -> None:
    """Anything but number+unit (ms, s, m, h, d) is refused."""
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.0, 0.5, 2.0, 300.0, 5400.0, 86400.0, 90061.5, 0.0005])
def test_format_duration_round_trips(seconds: float) -> None:
    """format_duration writes what parse_duration reads back."""
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("every", ["1ms", "999ms", "367d", "3000000d", "99999999999d"])
def test_every_outside_what_the_scheduler_honours_is_a_config_error(every: str) -> None:
    """`every` below 1s (a spinning feed) or above 366d (APScheduler overflows) is refused."""
    with pytest.raises(ConfigError, match=r"\$\.feeds\[0\]\.schedule\.every.*out of range.*1s to 366d"):
        one_feed(schedule={"every": every})


@pytest.mark.parametrize("every", ["1s", "366d"])
def test_every_at_its_bounds_is_accepted(every: str) -> None:
    """The bounds themselves are valid schedules."""
    assert one_feed(schedule={"every": every}).schedule.every == parse_duration(every)


def test_jitter_above_a_day_is_a_config_error() -> None:
    """scheduler.jitter feeds the same trigger arithmetic: more than 1d is refused."""
    with pytest.raises(ConfigError, match=r"\$\.scheduler\.jitter.*out of range"):
        parse(minimal(scheduler={"jitter": "99999999999d"}))


def test_cron_schedule_is_kept_and_described() -> None:
    """A valid cron is stored as written and shown with its (UTC) time zone."""
    feed = one_feed(schedule={"cron": "0 6 * * mon-fri"})
    assert feed.schedule == Schedule(cron="0 6 * * mon-fri")
    assert str(feed.schedule) == "cron '0 6 * * mon-fri' UTC"
    assert str(one_feed(schedule={"every": "90s"}).schedule) == "every 1m30s"


# --- secrets ----------------------------------------------------------------------------------


def test_password_from_environment_is_hidden() -> None:
    """password_env is read at load; neither repr nor str of Config or Feed shows it."""
    data = minimal(ksqldb={"url": "https://k:8088", "username": "exporter",
                           "password_env": "KSQL_PW"})
    cfg = parse(data, environ={"KSQL_PW": "s3cr3t-value"})
    assert cfg.ksqldb.password is not None
    assert cfg.ksqldb.password.reveal() == "s3cr3t-value"
    for text in (repr(cfg), str(cfg), repr(cfg.ksqldb), str(cfg.feeds[0]), repr(cfg.feeds[0])):
        assert "s3cr3t-value" not in text
    assert "password=***" in repr(cfg)


def test_password_from_file_strips_newline(tmp_path: Path) -> None:
    """password_file (relative to the config) is read at load, without its trailing newline."""
    (tmp_path / "pw").write_text("from-file\n", encoding="utf-8")
    cfg = parse_config(minimal(ksqldb={"url": "http://k:8088", "username": "u",
                                       "password_file": "pw"}),
                       path=tmp_path / "c.yaml", environ={})
    assert cfg.ksqldb.password == Secret("from-file")
    assert "from-file" not in repr(cfg)


def test_secret_masks_itself() -> None:
    """Secret prints as *** and compares by value."""
    secret = Secret("x")
    assert (repr(secret), str(secret), f"{secret}") == ("***", "***", "***")
    assert secret == Secret("x") and secret != Secret("y") and hash(secret) == hash(Secret("x"))


# --- paths ------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    """lake.root, logging.dir and TLS files resolve against the file's folder, not the cwd."""
    (tmp_path / "certs").mkdir()
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / "certs" / name).write_text("pem", encoding="utf-8")
    data = minimal(
        ksqldb={"url": "https://k:8088", "tls": {"ca_file": "certs/ca.pem",
                                                 "cert_file": "certs/client.pem",
                                                 "key_file": "certs/client.key"}},
        lake={"root": "../lake"},
        logging={"dir": "logs"},
    )
    cfg = parse_config(data, path=tmp_path / "etc.yaml", environ={})
    assert cfg.lake.root == tmp_path.parent.resolve() / "lake"
    assert cfg.logging.dir == tmp_path.resolve() / "logs"
    assert cfg.ksqldb.tls.ca_file == tmp_path.resolve() / "certs" / "ca.pem"
    assert cfg.ksqldb.tls.key_file == tmp_path.resolve() / "certs" / "client.key"


def test_absolute_paths_are_kept() -> None:
    """An absolute lake.root is used as written."""
    assert parse(minimal(lake={"root": "/var/lib/lake"})).lake.root == Path("/var/lib/lake")


def test_default_config_path_prefers_the_environment() -> None:
    """-c defaults to $LAKEEXPORTD_CONFIG, then /etc/lakeexportd/lakeexportd.yaml."""
    assert default_config_path({"LAKEEXPORTD_CONFIG": "/x/y.yaml"}) == Path("/x/y.yaml")
    assert default_config_path({}) == Path("/etc/lakeexportd/lakeexportd.yaml")
    assert default_config_path({"LAKEEXPORTD_CONFIG": ""}) == Path(
        "/etc/lakeexportd/lakeexportd.yaml")


# --- shipped files ----------------------------------------------------------------------------


def test_production_example_loads() -> None:
    """etc/lakeexportd.yaml is valid and shows every default it claims to."""
    cfg = load_config(REPO / "etc" / "lakeexportd.yaml", environ={"KSQLDB_PASSWORD": "pw"})
    assert cfg.defaults == config.FeedDefaults()
    assert cfg.ksqldb.username == "lakeexport"
    assert [(f.kind, f.format) for f in cfg.feeds] == [
        ("stream", "parquet"), ("stream", "parquet"), ("table", "parquet"), ("stream", "delta"),
        ("stream", "parquet")]
    live = cfg.feed("transaction_live")
    assert live.realtime and (live.rotate.rows, live.rotate.bytes, live.rotate.age,
                              live.rotate.idle) == (1_000_000, 128 * 1024 * 1024, 60.0, 10.0)


def test_demo_config_loads_and_covers_the_sandbox_catalog() -> None:
    """etc/demo.yaml points at the sandbox, writes ../data_lake and names its eight sources."""
    cfg = load_config(REPO / "etc" / "demo.yaml", environ={})
    assert cfg.ksqldb.url == "http://127.0.0.1:18088"
    assert cfg.lake.root == REPO.resolve() / "data_lake"
    assert {f.source: f.kind for f in cfg.feeds} == {
        "TRANSACTION_STREAM": "stream", "TRANSACTION_FLATTENED": "stream",
        "TRANSACTION_ANONYMIZED": "stream", "TRANSACTION_BLACKLISTED": "stream",
        "WIDE_DECIMALS": "stream",
        "USER_SUMMARY": "table", "PAYMENT_TOTALS": "table", "PRODUCT_COUNTS": "table"}
    assert cfg.feed("transaction_anonymized").security == "anonymized"
    assert all(f.security == "aggregated" for f in cfg.feeds if f.kind == "table")
    assert all(f.schedule.every is not None and f.schedule.every <= 30 for f in cfg.feeds
               if not f.realtime)
    live = cfg.feed("transaction_live")
    assert live.realtime and (live.rotate.age, live.rotate.idle) == (5.0, 2.0)


# --- errors -----------------------------------------------------------------------------------


def _expectations(path: Path) -> tuple[str, str | None]:
    header = path.read_text(encoding="utf-8").splitlines()[:2]
    expect = re.fullmatch(r"# expect: (.+)", header[0])
    assert expect, f"{path.name} must start with '# expect: ...'"
    key_path = re.fullmatch(r"# path: (\S+)", header[1]) if len(header) > 1 else None
    return expect.group(1), key_path.group(1) if key_path else None


def test_bad_config_corpus_is_large_enough() -> None:
    """The corpus keeps at least 30 bad files, one rule or more each."""
    assert len(BAD_CONFIGS) >= 30


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=lambda p: p.stem)
def test_bad_config_is_refused_with_a_precise_message(path: Path) -> None:
    """Each bad file raises ConfigError naming the file, the key path and the expected text."""
    expected, key_path = _expectations(path)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"X": "set"})
    message = str(caught.value)
    assert expected in message
    assert path.name in message
    if key_path is not None:
        assert f"{key_path}:" in message or f"{key_path} (feed" in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that cannot be read is a ConfigError naming it and the -c option."""
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read .* -c"):
        load_config(tmp_path / "nope.yaml")


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    """Passing a directory gives the same clear error, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(tmp_path)


def test_errors_name_the_feed() -> None:
    """Errors inside a feed also name the feed, so long files are easy to fix."""
    with pytest.raises(ConfigError, match=r"\$\.feeds\[0\]\.batch_size \(feed 'orders'\)"):
        one_feed(batch_size=0)


def test_password_env_error_never_shows_other_secrets() -> None:
    """An unset password_env names the variable, and the fix, but no value."""
    data = minimal(ksqldb={"url": "http://k", "username": "u", "password_env": "PW"})
    with pytest.raises(ConfigError, match="export PW") as caught:
        parse(data, environ={"OTHER": "leak-me"})
    assert "leak-me" not in str(caught.value)


# --- validate command -------------------------------------------------------------------------


def test_validate_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """`validate` lists each feed with kind and schedule, and returns 0."""
    assert cli._validate(argparse.Namespace(config=str(REPO / "etc" / "demo.yaml"))) == 0
    out = capsys.readouterr().out
    assert "OK, 10 feeds (10 enabled): 7 streams, 3 tables" in out
    assert re.search(r"user_summary\s+table\s+USER_SUMMARY\s+every 20s", out)


def test_validate_warns_about_a_cron_that_never_fires(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`0 0 31 2 *` loads (it is a valid cron) but `validate` warns that the feed never runs."""
    path = tmp_path / "lakeexportd.yaml"
    path.write_text("ksqldb: {url: 'http://k:8088'}\nlake: {root: lake}\nfeeds:\n"
                    "  - {name: feb, source: S, kind: stream, schedule: {cron: '0 0 31 2 *'}}\n")
    assert cli._validate(argparse.Namespace(config=str(path))) == 0
    assert "warning: feed 'feb': cron '0 0 31 2 *' matches no date" in capsys.readouterr().err


def test_validate_uses_the_environment_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without -c, `validate` reads $LAKEEXPORTD_CONFIG."""
    monkeypatch.setenv("LAKEEXPORTD_CONFIG", str(REPO / "etc" / "demo.yaml"))
    assert cli._validate(argparse.Namespace(config=None)) == 0
    assert "demo.yaml: OK" in capsys.readouterr().out


def test_validate_command_exits_78_on_a_bad_file(capsys: pytest.CaptureFixture[str]) -> None:
    """`lakeexportd validate -c BAD` prints the error and exits 78 (EX_CONFIG)."""
    pytest.importorskip("lakeexportd.sandbox.cli")  # build_parser() also registers the sandbox
    bad = BAD_CONFIGS[0]
    assert cli.main(["validate", "-c", str(bad)]) == EX_CONFIG
    assert bad.name in capsys.readouterr().err
