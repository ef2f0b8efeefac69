"""`tiering: {after, class}` (DESIGN section 11): per stream feed or in `defaults`, checked
against the lake's store at load, every error naming the file, the key path and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lakeexportd.config.load import parse_config
from lakeexportd.config.model import AZURE_TIERS, S3_CLASSES, Tiering
from lakeexportd.errors import ConfigError
from lakeexportd.feeds.registry import feed_from_options, feed_options
from lakeexportd.lake.storage.object import AZURE_TIERS as STORE_AZURE
from lakeexportd.lake.storage.object import S3_CLASSES as STORE_S3

FILE = "/srv/conf/lakeexportd.yaml"
S3 = {"root": "s3://bucket/lake", "storage": {"region": "eu-west-3"}}
AZ = {"root": "az://container/lake", "storage": {"account_name": "acct"}}
STREAM = {"name": "tx", "source": "TX", "kind": "stream"}


def parse(lake: dict[str, Any], feeds: list[dict[str, Any]], **extra: Any) -> Any:
    return parse_config({"ksqldb": {"url": "http://localhost:8088"}, "lake": lake,
                         "logging": {"dir": "/var/log/lakeexportd"}, "feeds": feeds, **extra},
                        path=FILE, environ={})


def test_defaults_reach_streams_only_and_a_feed_may_override_or_turn_it_off() -> None:
    cfg = parse(S3, [STREAM, {"name": "users", "source": "U", "kind": "table"},
                     {**STREAM, "name": "cold", "tiering": {"after": "90d", "class": "GLACIER_IR"}},
                     {**STREAM, "name": "hot", "tiering": None}],
                defaults={"tiering": {"after": "30d", "class": "STANDARD_IA"}})
    assert {f.name: f.tiering for f in cfg.feeds} == {
        "tx": Tiering(30, "STANDARD_IA"), "users": None, "cold": Tiering(90, "GLACIER_IR"),
        "hot": None}
    azure = parse(AZ, [{**STREAM, "tiering": {"after": "7d", "class": "Cold"}}])
    assert azure.feeds[0].tiering == Tiering(7, "Cold")


def test_the_registry_keeps_tiering_in_yaml_form() -> None:
    """A registry entry (cli or config feed) reads back the same Feed, tiering included."""
    feed = parse(AZ, [{**STREAM, "tiering": {"after": "7d", "class": "Cool"}}]).feeds[0]
    options = feed_options(feed)
    assert options["tiering"] == {"after": "7d", "class": "Cool"}
    assert feed_from_options(options, where="registry") == feed


def test_the_configs_classes_are_the_stores() -> None:
    """config cannot import the lake: the two lists are pinned together here."""
    assert frozenset(S3_CLASSES) == STORE_S3 and frozenset(AZURE_TIERS) == STORE_AZURE


@pytest.mark.parametrize(("lake", "feed_tiering", "defaults", "message"), [
    ({"root": "/srv/lake"}, None, {"after": "30d", "class": "STANDARD_IA"},
     "$.defaults.tiering: storage tiering needs an object-store lake: the lake is the local "
     "folder /srv/lake: remove `tiering:`, or make lake.root an s3:// or az:// URL"),
    ({"root": "/srv/lake"}, {"after": "30d", "class": "Cool"}, None,
     "$.feeds[0].tiering (feed 'tx'): storage tiering needs an object-store lake"),
    ({"root": "gs://bucket/lake"}, {"after": "30d", "class": "NEARLINE"}, None,
     "gs:// lakes have no tiering yet (S3 and Azure Blob do)"),
    (S3, {"after": "30d", "class": "Cool"}, None,
     "$.feeds[0].tiering.class (feed 'tx'): 'Cool' is not a class tiering moves to on s3:// "
     "lakes: use one of: STANDARD_IA | ONEZONE_IA | INTELLIGENT_TIERING | GLACIER_IR"),
    (S3, {"after": "30d", "class": "GLACIER"}, None, "'GLACIER' is not a class"),
    (AZ, None, {"after": "30d", "class": "Archive"},
     "$.defaults.tiering.class: 'Archive' is not a class tiering moves to on az:// lakes: use "
     "one of: Cool | Cold"),
    (AZ, {"after": "30d", "class": "cool"}, None, "did you mean 'Cool'?"),
    (S3, {"after": "36h", "class": "STANDARD_IA"}, None,
     "$.feeds[0].tiering.after (feed 'tx'): '36h' is not a whole number of days"),
    (S3, {"after": 30, "class": "STANDARD_IA"}, None, "duration 30 has no unit"),
    (S3, {"class": "STANDARD_IA"}, None, "$.feeds[0].tiering.after (feed 'tx'): missing"),
    (S3, {"after": "30d"}, None, "$.feeds[0].tiering.class (feed 'tx'): missing required key"),
    (S3, {"after": "30d", "klass": "STANDARD_IA"}, None, "did you mean 'class'?"),
    (S3, "30d", None, "$.feeds[0].tiering (feed 'tx'): expected a mapping"),
])
def test_a_bad_tiering_is_a_config_error_naming_the_key_and_the_fix(
    lake: dict[str, Any], feed_tiering: Any, defaults: Any, message: str,
) -> None:
    feed = dict(STREAM) if feed_tiering is None else {**STREAM, "tiering": feed_tiering}
    extra = {"defaults": {"tiering": defaults}} if defaults is not None else {}
    with pytest.raises(ConfigError) as info:
        parse(lake, [feed], **extra)
    assert str(info.value).startswith(FILE) and message in str(info.value)


def test_a_table_feed_refuses_tiering() -> None:
    with pytest.raises(ConfigError, match=r"\$\.feeds\[0\]\.tiering \(feed 'users'\): "
                       r"`tiering` does not apply to a table: remove it \(it is for streams\)"):
        parse(S3, [{"name": "users", "source": "U", "kind": "table",
                    "tiering": {"after": "30d", "class": "STANDARD_IA"}}])


def test_validate_reports_a_tiering_on_a_local_lake_with_file_and_path(tmp_path: Path) -> None:
    """The real CLI: exit 78, the file, the JSON path and the fix on stderr."""
    config = tmp_path / "lakeexportd.yaml"
    config.write_text(f"ksqldb: {{url: 'http://127.0.0.1:1'}}\nlake: {{root: '{tmp_path}'}}\n"
                      "feeds:\n  - {name: tx, source: TX, kind: stream,\n"
                      "     tiering: {after: 30d, class: STANDARD_IA}}\n")
    done = subprocess.run([sys.executable, "-m", "lakeexportd", "validate", "-c", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 78
    assert f"{config}: $.feeds[0].tiering (feed 'tx'): storage tiering needs an object-store " \
        "lake" in done.stderr
