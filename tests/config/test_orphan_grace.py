"""``lake.orphan_grace``: a duration on every root (default 1h; 0s allowed, negative refused)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakeexportd.config.load import parse_config
from lakeexportd.errors import ConfigError

CONFIG_FILE = Path("/etc/lakeexportd/lakeexportd.yaml")


def lake(**keys: object) -> float:
    data = {"ksqldb": {"url": "http://127.0.0.1:8088"}, "lake": keys,
            "logging": {"dir": "/var/log/lakeexportd"},
            "feeds": [{"name": "tx", "source": "TX", "kind": "stream"}]}
    return parse_config(data, path=CONFIG_FILE, environ={}).lake.orphan_grace


def test_orphan_grace_defaults_to_an_hour_on_folders_and_object_stores() -> None:
    assert lake(root="/data/lake") == 3600.0
    assert lake(root="s3://bucket/lake") == 3600.0


def test_orphan_grace_is_allowed_on_a_folder_and_may_be_zero() -> None:
    assert lake(root="/data/lake", orphan_grace="10m") == 600.0
    assert lake(root="file:///data/lake", orphan_grace="2h") == 7200.0
    assert lake(root="az://container/lake", orphan_grace="0s") == 0.0


@pytest.mark.parametrize(("value", "message"), [
    ("-5m", "is negative"), (60, "has no unit"), ("soon", "bad duration"),
])
def test_a_bad_orphan_grace_names_the_key_and_the_fix(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"\$\.lake\.orphan_grace.*{message}"):
        lake(root="s3://bucket/lake", orphan_grace=value)
