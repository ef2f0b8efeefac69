"""`lake.root` as a folder, a file:// URL or an object-store URL, and `lake.storage`.

Secrets come only from `<option>_env` / `<option>_file`; a literal one is refused naming the
key, never echoing the value. Opening the configured lake (`lake_of`) is offline, so
`validate` checks the store options too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lakeexportd import cli
from lakeexportd.config.build import OBJECT_SCHEMES, is_secret_option
from lakeexportd.config.load import load_config, parse_config
from lakeexportd.errors import EX_CONFIG, EX_OK, ConfigError
from lakeexportd.lake.configured import lake_of
from lakeexportd.lake.storage import ObjectStorage
from lakeexportd.lake.storage.object import SCHEMES

CONFIG_FILE = "/srv/conf/lakeexportd.yaml"
SECRET = "s3cr3t-value-never-shown"


def document(root: str, storage: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    lake: dict[str, Any] = {"root": root}
    if storage is not None:
        lake["storage"] = storage
    return {"ksqldb": {"url": "http://localhost:8088"}, "lake": lake,
            "logging": {"dir": "/var/log/lakeexportd"}, **extra}


def parse(data: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    return parse_config(data, path=CONFIG_FILE, environ=environ or {})


def test_an_s3_lake_reads_its_secret_from_the_environment_and_never_shows_it() -> None:
    cfg = parse(document("s3://bucket/lake/", {
        "region": "eu-west-3", "endpoint": "http://127.0.0.1:9", "allow_http": True,
        "access_key_id_env": "KEY_ID", "secret_access_key_env": "SECRET",
    }), {"KEY_ID": "AKIA1", "SECRET": SECRET})
    assert cfg.lake.root is None and cfg.lake.url == "s3://bucket/lake"
    assert dict(cfg.lake.storage) == {"region": "eu-west-3", "endpoint": "http://127.0.0.1:9",
                                      "allow_http": "true", "access_key_id": "AKIA1",
                                      "secret_access_key": SECRET}
    assert cfg.logging.dir == Path("/var/log/lakeexportd")
    assert SECRET not in repr(cfg) and SECRET not in str(cfg.lake)
    lake = lake_of(cfg.lake)
    assert isinstance(lake.storage, ObjectStorage) and str(lake.root) == "/bucket/lake"
    assert lake is lake_of(cfg.lake)  # opened once per configured lake
    assert SECRET not in repr(lake)


def test_a_secret_file_is_read_relative_to_the_config_and_stripped(tmp_path: Path) -> None:
    (tmp_path / "azure.key").write_text("a2V5\n")
    cfg = parse_config(document("az://container/lake", {
        "account_name": "acct", "account_key_file": "azure.key",
    }), path=tmp_path / "c.yaml", environ={})
    assert dict(cfg.lake.storage) == {"account_name": "acct", "account_key": "a2V5"}


@pytest.mark.parametrize("key", [
    "secret_access_key", "AWS_SECRET_ACCESS_KEY", "session_token", "token", "account_key",
    "azure_storage_account_key", "master_key", "access_key", "client_secret", "sas_key",
    "sas_token", "bearer_token", "encryption_key", "service_account_key", "password",
])
def test_a_literal_secret_is_refused_naming_the_key_not_the_value(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(document("s3://bucket/lake", {key: SECRET}))
    message = str(caught.value)
    assert f"{CONFIG_FILE}: $.lake.storage.{key}: a secret written in the configuration" \
        in message
    assert f"`{key}_env: VARIABLE`" in message and f"`{key}_file:" in message
    assert SECRET not in message


@pytest.mark.parametrize("key", [
    "access_key_id", "region", "endpoint", "skip_signature", "account_name", "client_id",
    "container_credentials_relative_uri", "fabric_token_service_url", "sse_kms_key_id",
    "conditional_put", "copy_if_not_exists",
])
def test_options_that_are_not_secrets_are_kept(key: str) -> None:
    assert not is_secret_option(key)


def test_obstores_own_file_options_are_paths_not_secret_files(tmp_path: Path) -> None:
    cfg = parse_config(document("s3://bucket/lake", {"web_identity_token_file": "token",
                                                     "region": "us-east-1"}),
                       path=tmp_path / "c.yaml", environ={})
    assert dict(cfg.lake.storage)["web_identity_token_file"] == str(tmp_path / "token")


def test_an_empty_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\$\.lake\.storage\.secret_access_key_env: "
                       "environment variable SECRET is empty"):
        parse(document("s3://b/l", {"secret_access_key_env": "SECRET"}), {"SECRET": ""})


def test_file_urls_and_folders_stay_paths() -> None:
    for root in ("file:///var/lib/lake", "file://localhost/var/lib/lake", "/var/lib/lake"):
        cfg = parse(document(root))
        assert cfg.lake.root == Path("/var/lib/lake") and cfg.lake.url is None, root
    cfg = parse({"ksqldb": {"url": "http://k"}, "lake": {"root": "/var/lib/lake"}})
    assert cfg.logging.dir == Path("/var/lib/lake/logs")  # the local default is unchanged


def test_config_knows_the_schemes_the_storage_opens() -> None:
    assert set(OBJECT_SCHEMES) == SCHEMES - {"memory"}


def write(tmp_path: Path, storage: str) -> Path:
    path = tmp_path / "lakeexportd.yaml"
    path.write_text("ksqldb: {url: 'http://localhost:8088'}\n"
                    f"lake: {{root: 's3://bucket/lake', storage: {storage}}}\n"
                    f"logging: {{dir: '{tmp_path / 'logs'}'}}\n")
    return path


def test_validate_checks_the_store_options_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A misspelt option is refused by `validate` (and at start) naming the file and
    `$.lake.storage`; good options validate without any request to the store."""
    pytest.importorskip("lakeexportd.sandbox.cli")
    good = write(tmp_path, "{region: eu-west-3, endpoint: 'http://127.0.0.1:9'}")
    assert cli.main(["validate", "-c", str(good)]) == EX_OK
    assert "lake s3://bucket/lake;" in capsys.readouterr().out
    bad = write(tmp_path, "{regoin: eu-west-3}")
    assert cli.main(["validate", "-c", str(bad)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert f"{bad}: $.lake.storage: " in err and "'regoin'" in err
    with pytest.raises(ConfigError, match=r"\$\.lake\.storage: .*regoin"):
        lake_of(load_config(bad).lake)
