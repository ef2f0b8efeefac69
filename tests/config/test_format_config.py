"""`format: parquet | delta` (DESIGN section 12): per feed or in `defaults`, parquet by default."""

from __future__ import annotations

from typing import Any

import pytest

from lakeexportd.config.load import parse_config
from lakeexportd.errors import ConfigError
from lakeexportd.feeds.registry import feed_from_options, feed_options

FILE = "/srv/conf/lakeexportd.yaml"
STREAM = {"name": "tx", "source": "TX", "kind": "stream"}
TABLE = {"name": "users", "source": "U", "kind": "table"}


def parse(feeds: list[dict[str, Any]], lake: dict[str, Any] | None = None, **extra: Any) -> Any:
    return parse_config({"ksqldb": {"url": "http://localhost:8088"},
                         "lake": lake or {"root": "/srv/lake"},
                         "logging": {"dir": "/var/log/lakeexportd"}, "feeds": feeds, **extra},
                        path=FILE, environ={})


def test_parquet_by_default_delta_per_feed_or_in_defaults() -> None:
    cfg = parse([STREAM, {**TABLE, "format": "delta"}])
    assert [f.format for f in cfg.feeds] == ["parquet", "delta"]
    cfg = parse([STREAM, {**TABLE, "format": "parquet"}], defaults={"format": "delta"})
    assert [f.format for f in cfg.feeds] == ["delta", "parquet"]


def test_an_unknown_format_names_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        parse([{**STREAM, "format": "iceberg"}])
    text = str(info.value)
    assert "$.feeds[0].format" in text and "'iceberg'" in text
    assert "parquet" in text and "delta" in text


def test_tiering_is_refused_on_a_delta_feed_with_the_fix() -> None:
    s3 = {"root": "s3://bucket/lake", "storage": {"region": "eu-west-3"}}
    with pytest.raises(ConfigError, match=r"feeds\[0\]\.format.*`tiering` is for Parquet feeds"):
        parse([{**STREAM, "format": "delta"}], lake=s3,
              defaults={"tiering": {"after": "30d", "class": "STANDARD_IA"}})
    cfg = parse([{**STREAM, "format": "delta", "tiering": None}], lake=s3,
                defaults={"tiering": {"after": "30d", "class": "STANDARD_IA"}})
    assert cfg.feeds[0].tiering is None


def test_the_registry_keeps_the_format() -> None:
    feed = parse([{**STREAM, "format": "delta"}]).feeds[0]
    options = feed_options(feed)
    assert options["format"] == "delta"
    assert feed_from_options(options, where="registry") == feed
