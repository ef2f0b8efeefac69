"""`catalog:` and the per-feed `description`, `owner`, `tags` (DESIGN sections 7 and 13)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lakeexportd.config.load import parse_config
from lakeexportd.config.model import summarize
from lakeexportd.errors import ConfigError
from lakeexportd.feeds.registry import feed_from_options, feed_options, fingerprint

FILE = "/srv/conf/lakeexportd.yaml"
STREAM = {"name": "tx", "source": "TX", "kind": "stream"}


def parse(catalog: Any = None, feeds: list[dict[str, Any]] | None = None,
          environ: dict[str, str] | None = None, **extra: Any) -> Any:
    data = {"ksqldb": {"url": "http://localhost:8088"}, "lake": {"root": "/srv/lake"},
            "logging": {"dir": "/var/log/lakeexportd"}, "feeds": feeds or [STREAM], **extra}
    if catalog is not None:
        data["catalog"] = catalog
    return parse_config(data, path=FILE, environ=environ or {})


def test_no_catalog_by_default_and_a_sqlite_path_resolves_against_the_config_folder() -> None:
    assert parse().catalog is None
    catalog = parse({"uri": "sqlite:///catalog.db"}).catalog
    assert (catalog.type, catalog.uri, catalog.namespace) == (
        "sql", "sqlite:////srv/conf/catalog.db", "lake")
    assert parse({"uri": "sqlite:////var/lib/x/c.db"}).catalog.uri == "sqlite:////var/lib/x/c.db"


def test_a_postgresql_password_comes_from_the_environment_or_a_file_never_the_yaml(
        tmp_path: Path) -> None:
    uri = "postgresql://lakeexportd@db.example.com:5432/catalog"
    catalog = parse({"uri": uri, "password_env": "CATALOG_PW"},
                    environ={"CATALOG_PW": "s3cret"}).catalog
    assert catalog.uri == "postgresql+psycopg2://lakeexportd@db.example.com:5432/catalog"
    assert catalog.password.reveal() == "s3cret"
    assert "s3cret" not in repr(catalog) and "s3cret" not in catalog.where
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    assert parse({"uri": uri, "password_file": str(secret)}).catalog.password.reveal() == "from-file"
    with pytest.raises(ConfigError, match=r"\$\.catalog\.uri: a password written in the catalog"):
        parse({"uri": "postgresql://lakeexportd:s3cret@db/catalog"})
    with pytest.raises(ConfigError, match=r"\$\.catalog\.password_env: environment variable "
                                          r"'CATALOG_PW' is unset"):
        parse({"uri": uri, "password_env": "CATALOG_PW"})
    with pytest.raises(ConfigError, match="secret written in the configuration file"):
        parse({"type": "rest", "uri": "https://cat", "properties": {"token": "abc"}})


@pytest.mark.parametrize(("catalog", "where", "words"), [
    ({"uri": "mysql://db/catalog"}, "$.catalog.uri", "not a SQLite or PostgreSQL URL"),
    ({}, "$.catalog.uri", "missing required key"),
    ({"uri": "sqlite://"}, "$.catalog.uri", "names no database file"),
    ({"uri": "postgresql://db"}, "$.catalog.uri", "names no host or database"),
    ({"uri": "sqlite:///c.db", "namespace": "Lake.Raw"}, "$.catalog.namespace",
     "a catalog namespace"),
    ({"uri": "sqlite:///c.db", "password_env": "PW"}, "$.catalog.password_env",
     "a SQLite catalog has no password"),
    ({"uri": "sqlite:///c.db", "colour": "blue"}, "$.catalog.colour", "unknown key"),
    ({"uri": "sqlite:///c.db", "timeout": "0s"}, "$.catalog.timeout", ""),
])
def test_bad_catalog_settings_name_the_key_and_the_fix(catalog: dict[str, Any], where: str,
                                                       words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(catalog, environ={"PW": "x"})
    assert f"{FILE}: {where}" in str(info.value) and words in str(info.value)


def test_other_pyiceberg_catalogs_pass_through_with_their_properties() -> None:
    catalog = parse({"type": "rest", "uri": "https://catalog.example.com",
                     "warehouse": "s3://bucket/wh", "properties": {"scope": "lake",
                                                                   "credential_env": "CRED"}},
                    environ={"CRED": "id:secret"}).catalog
    assert catalog.type == "rest" and catalog.warehouse == "s3://bucket/wh"
    assert dict(catalog.properties) == {"scope": "lake", "credential": "id:secret"}


def test_description_owner_and_tags_per_feed_owner_and_tags_also_as_defaults() -> None:
    cfg = parse({"uri": "sqlite:///c.db"}, feeds=[
        {**STREAM, "description": "Card payments,\none per line.", "tags": ["finance", "pii",
                                                                            "finance"]},
        {"name": "users", "source": "U", "kind": "table", "owner": "analytics"},
    ], defaults={"owner": "payments", "tags": ["lake"]})
    tx, users = cfg.feeds
    assert (tx.description, tx.owner, tx.tags) == ("Card payments,\none per line.", "payments",
                                                   ("finance", "pii"))
    assert (users.description, users.owner, users.tags) == (None, "analytics", ("lake",))
    for bad in ({"tags": "finance"}, {"tags": ["a\nb"]}, {"owner": ""}):
        with pytest.raises(ConfigError, match=r"\$\.feeds\[0\]\."):
            parse(feeds=[{**STREAM, **bad}])


def test_the_registry_round_trips_them_and_old_fingerprints_stay() -> None:
    plain = parse().feeds[0]
    described = parse(feeds=[{**STREAM, "description": "d", "owner": "o",
                              "tags": ["a", "b"]}]).feeds[0]
    assert feed_from_options(feed_options(described), where="registry") == described
    assert "tags" not in feed_options(plain) and "owner" not in feed_options(plain)
    assert fingerprint(plain) != fingerprint(described)


def test_validate_names_the_catalog_without_its_password() -> None:
    cfg = parse({"uri": "postgresql://u@db:5432/catalog", "password_env": "PW"},
                environ={"PW": "hunter2"})
    text = "\n".join(summarize(cfg))
    assert "catalog" in text and "db:5432/catalog" in text and "hunter2" not in text


def test_catalog_false_leaves_a_feed_out_and_round_trips_through_the_registry() -> None:
    out, default = parse({"uri": "sqlite:///c.db"}, feeds=[
        {**STREAM, "catalog": False}, {"name": "users", "source": "U", "kind": "table"}]).feeds
    assert (out.catalogued, default.catalogued) == (False, True)
    assert feed_options(out)["catalog"] is False and "catalog" not in feed_options(default)
    assert feed_from_options(feed_options(out), where="registry") == out
