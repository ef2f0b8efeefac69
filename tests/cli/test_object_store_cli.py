"""The real CLI on lakes in object stores: ``lake.root: s3://...`` (moto's S3 server) and
``az://...`` (Azurite), credentials from the environment, never printed or stored.

``lakeexportd export`` then ``verify``, ``metadata list`` and ``files`` run as operators run
them (real processes, real exit codes); the rows are read back through the store and compared
with the sandbox's own truth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import obstore
import pytest
from lakecheck import assert_exactly_once, read_listed
from objectstores import Bucket

from lakeexportd.lake.storage import open_lake
from lakeexportd.sandbox import Sandbox

SECRET = "lakeexportd-test-secret-7f3a9c"  # moto takes any secret: a string easy to grep for


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=21, preload=800, preload_days=3) as sb:
        yield sb


def setup(kind: str, bucket: Bucket, sandbox: Sandbox, tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    """A config file for a lake in ``bucket``, the environment holding its secret, and it."""
    if kind == "s3":
        secret, secret_key = SECRET, "secret_access_key"
        plain = {"endpoint": bucket.config["endpoint"], "region": bucket.config["region"],
                 "access_key_id_env": "LAKE_KEY_ID"}
    else:
        secret, secret_key = str(bucket.config["account_key"]), "account_key"
        plain = {"endpoint": bucket.config["endpoint"],
                 "account_name": bucket.config["account_name"]}
    options = ", ".join(f"{k}: '{v}'" for k, v in plain.items())
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "lakeexportd.yaml"
    config.write_text(
        f"ksqldb: {{url: '{sandbox.url}', max_retries: 1}}\n"
        f"lake:\n  root: {bucket.url}/lake\n"
        f"  storage: {{{options}, allow_http: true, {secret_key}_env: LAKE_SECRET}}\n"
        f"logging: {{dir: '{tmp_path / 'logs'}'}}\n"
        "feeds:\n"
        "  - {name: tx, source: TRANSACTION_FLATTENED, kind: stream}\n"
        "  - {name: users, source: USER_SUMMARY, kind: table}\n"
    )
    env = {**os.environ, "LAKE_SECRET": secret,
           "LAKE_KEY_ID": str(bucket.config.get("access_key_id", ""))}
    return config, env, secret


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lakeexportd", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_export_verify_metadata_and_files_on_an_object_store(
    kind: str, sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    bucket: Bucket = request.getfixturevalue("s3_bucket" if kind == "s3" else "azure_container")
    config, env, secret = setup(kind, bucket, sandbox, tmp_path)
    outputs = []
    for args in (["export", "-c", str(config), "--all"], ["verify", "-c", str(config)],
                 ["metadata", "list", "-c", str(config), "--json"],
                 ["files", "-c", str(config), "tx"]):
        done = cli(env, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        outputs.append(done.stdout + done.stderr)
    summaries = {s["feed"]: s for s in json.loads(cli(env, "metadata", "list", "-c", str(config),
                                                       "--json").stdout)}
    assert summaries["tx"]["records"] == sandbox.arrow("TRANSACTION_FLATTENED").num_rows
    urls = outputs[3].split()
    assert urls and all(u.startswith(f"{bucket.url}/lake/streams/tx/year=") for u in urls)

    options = {k: str(v) for k, v in {**bucket.config, "allow_http": "true"}.items()}
    lake = open_lake(f"{bucket.url}/lake", options)
    rows = read_listed(Path(lake.root), "stream", "tx", lake.storage)
    assert_exactly_once(rows, sandbox.arrow("TRANSACTION_FLATTENED"))
    # The secret is in no output, no log file and no object of the lake.
    assert all(secret not in text for text in outputs)
    for log in (tmp_path / "logs").rglob("*"):
        assert not log.is_file() or secret not in log.read_text(errors="replace")
    for entry in lake.storage.walk_files(lake.root):
        assert secret.encode() not in lake.storage.read_bytes(entry.path), entry.path


def test_a_wrong_secret_fails_the_export_with_the_store_named_and_no_secret(
    sandbox: Sandbox, tmp_path: Path, azure_container: Bucket,
) -> None:
    """Azurite checks signatures: a wrong key is refused; the error names the store, not the key."""
    config, env, _ = setup("azure", azure_container, sandbox, tmp_path)
    wrong = "V3Jvbmcga2V5IGZvciB0aGUgdGVzdCBvbmx5Lg=="
    done = cli({**env, "LAKE_SECRET": wrong}, "export", "-c", str(config), "tx")
    assert done.returncode != 0
    assert "az://" in done.stderr and wrong not in done.stdout + done.stderr


def test_check_store_passes_real_servers_and_a_local_folder_and_refuses_careless_stores(
    sandbox: Sandbox, tmp_path: Path, s3_bucket: Bucket, azure_container: Bucket,
) -> None:
    """check-store: moto and Azurite enforce both fences; an S3 store configured without
    conditional puts is refused with 78 naming it, and so is the daemon's start."""
    for kind, bucket in (("s3", s3_bucket), ("azure", azure_container)):
        config, env, _ = setup(kind, bucket, sandbox, tmp_path / kind)
        done = cli(env, "check-store", "-c", str(config))
        assert done.returncode == 0, done.stderr
        assert f"{bucket.url}/lake: object store: create-if-absent ok, If-Match ok" in done.stdout
        assert "ok  If-Match: a replace with a stale ETag is refused" in done.stdout
        assert "ok  multipart upload: 2 parts" in done.stdout
        assert obstore.list(bucket.store).collect() == []  # every scratch object is gone
    local = tmp_path / "local.yaml"
    local.write_text(f"ksqldb: {{url: '{sandbox.url}'}}\nlake: {{root: '{tmp_path / 'lake'}'}}\n")
    done = cli(dict(os.environ), "check-store", "-c", str(local))
    assert done.returncode == 0 and "local folder: create-if-absent ok" in done.stdout
    assert "ok  flock: a second holder of a lock is refused" in done.stdout
    assert [p.name for p in (tmp_path / "lake").iterdir()] == []  # the scratch file is gone

    config, env, _ = setup("s3", s3_bucket, sandbox, tmp_path / "careless")
    text = config.read_text().replace("allow_http: true", "allow_http: true, "
                                      "conditional_put: disabled")
    config.write_text(text)
    done = cli(env, "check-store", "-c", str(config))
    assert done.returncode == 78, done.stderr
    assert f"the lake store {s3_bucket.url}/lake cannot hold exactly-once" in done.stderr
    assert "create-if-absent" in done.stderr
    daemon = cli(env, "run", "-c", str(config))
    assert daemon.returncode == 78 and "cannot hold exactly-once" in daemon.stderr


def test_check_store_refuses_a_store_that_ignores_conditional_writes_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI function on a memory:// lake whose PUTs drop If-None-Match and If-Match (an
    S3-compatible server that ignores them): exit 78 naming the store and both failures."""
    from lakeexportd import cli as main_cli
    from lakeexportd.lake import configured

    lake = open_lake("memory:///lake")
    careless = configured.ConfiguredLake(lake.storage, Path(lake.root), "memory:///lake")
    monkeypatch.setattr("lakeexportd.cli.check_store.lake_of", lambda settings: careless)
    real_put = obstore.put

    def careless_put(store: object, path: str, data: object, **kwargs: object) -> object:
        kwargs.pop("mode", None)
        return real_put(store, path, data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(obstore, "put", careless_put)
    config = tmp_path / "c.yaml"
    config.write_text("ksqldb: {url: 'http://127.0.0.1:1'}\nlake: {root: lake}\n")
    assert main_cli.main(["check-store", "-c", str(config)]) == 78
    err = capsys.readouterr().err
    assert "the lake store memory:///lake cannot hold exactly-once" in err
    assert "create-if-absent is ignored" in err and "If-Match is ignored" in err


COMMANDS_THAT_READ_THE_LAKE = (
    ("status",), ("files", "tx"), ("metadata", "list"), ("feeds", "list"), ("verify",),
    ("export", "--all"), ("repair",),
)


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_a_store_that_does_not_answer_is_a_clear_exit_75_for_every_command(
    kind: str, sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    """Nothing listens at the endpoint: each command says the store did not answer, names it,
    exits 75 (try again) and prints no traceback."""
    from objectstores import free_port

    bucket: Bucket = request.getfixturevalue("s3_bucket" if kind == "s3" else "azure_container")
    config, env, _ = setup(kind, bucket, sandbox, tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    if kind == "azure":
        dead += f"/{bucket.config['account_name']}"
    text = config.read_text().replace(str(bucket.config["endpoint"]), dead)
    config.write_text(text.replace("allow_http: true", "allow_http: true, max_retries: 0"))
    for command in COMMANDS_THAT_READ_THE_LAKE:
        args = [*command, "-c", str(config)]
        done = cli(env, *args)
        assert done.returncode == 75, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        assert "did not answer" in done.stderr, (args, done.stderr)
        assert bucket.url in done.stderr, (args, done.stderr)
