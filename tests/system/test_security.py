"""Security checks: the ksqlDB password never leaks; metrics bind loopback; names stay inside."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from daemonproc import DaemonProcess, Setup, wait_for

from lakeexportd.config.load import parse_config
from lakeexportd.errors import ConfigError
from lakeexportd.sandbox import Sandbox

USER = "exporter"
PASSWORD = "S3cr3t-pw-9f1Q"
WRONG = "Wr0ng-pw-77aZ"
SECRETS = [PASSWORD, WRONG, *(base64.b64encode(f"{USER}:{p}".encode()).decode() for p in (PASSWORD, WRONG))]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=41, preload=500, preload_days=2, user=USER, password=PASSWORD) as sb:
        yield sb


def start(setup: Setup, password: str) -> DaemonProcess:
    setup.write(
        [{"name": "txn", "source": "TRANSACTION_FLATTENED", "kind": "stream"},
         {"name": "users", "source": "USER_SUMMARY", "kind": "table"}],
        ksqldb={"username": USER, "password_env": "KSQL_PASSWORD"},
    )
    return setup.start(env={"KSQL_PASSWORD": password})


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def test_password_appears_nowhere_the_daemon_or_cli_writes(sandbox: Sandbox, tmp_path: Path) -> None:
    """After good runs, refused runs and CLI calls, no file, log, metric or message holds the password."""
    setup = Setup(tmp_path, sandbox)
    outputs: list[str] = []
    try:
        daemon = start(setup, PASSWORD)
        daemon.wait_runs("txn", 2)
        daemon.wait_runs("users", 1)
        outputs.append(daemon.get("/metrics").text)
        assert daemon.stop() == 0
        outputs.append(daemon.stderr)
        wrong = start(setup, WRONG)  # 401s: errors and their messages must not echo it either
        wait_for(lambda: wrong.runs("txn", "failed") >= 1, 30, "a refused run")
        outputs.append(wrong.get("/metrics").text)
        assert wrong.stop() == 0
        outputs.append(wrong.stderr)
    finally:
        for d in setup.daemons:
            if d.proc.poll() is None:
                d.kill()
    env = {**os.environ, "KSQL_PASSWORD": PASSWORD}
    for args in (["export", "--all"], ["validate"], ["feeds", "list", "--json"], ["metadata", "report", "--format", "json"],
                 ["verify", "--source"]):
        done = subprocess.run([sys.executable, "-m", "lakeexportd", *args[:1], "-c", str(setup.config), *args[1:]],
                              capture_output=True, text=True, env=env, timeout=120)
        outputs += [done.stdout, done.stderr]
    assert "401" in "".join(outputs)  # the refused runs really happened
    for text in outputs:
        assert not leaks(text)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".parquet")]
    assert any(p.name == "_metadata.json" for p in files) and any(p.suffix == ".log" for p in files)
    for path in files:
        if path.name == "lakeexportd.yaml":
            continue  # the config names the variable, not its value
        assert not leaks(path.read_bytes().decode("utf-8", "replace")), path


def test_password_in_the_yaml_itself_is_refused() -> None:
    """A `password:` key is refused: secrets come from an environment variable or a file."""
    with pytest.raises(ConfigError, match="password_env") as info:
        parse_config({"ksqldb": {"url": "http://x:1", "username": "u", "password": PASSWORD},
                      "lake": {"root": "lake"}, "feeds": []}, path="/etc/x.yaml", environ={})
    assert PASSWORD not in str(info.value)


def test_metrics_listen_on_loopback_by_default(tmp_path: Path) -> None:
    """Without metrics.listen the daemon's endpoint is 127.0.0.1:9464, never all interfaces."""
    config = parse_config({"ksqldb": {"url": "http://x:1"}, "lake": {"root": "lake"}, "feeds": []},
                          path=str(tmp_path / "c.yaml"), environ={})
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9464)


def test_running_daemon_binds_only_the_configured_host(sandbox: Sandbox, tmp_path: Path) -> None:
    """The metrics socket of a real daemon listens on 127.0.0.1 only."""
    setup = Setup(tmp_path, sandbox)
    setup.write([], ksqldb={"username": USER, "password_env": "KSQL_PASSWORD"})
    daemon = setup.start(env={"KSQL_PASSWORD": PASSWORD})
    try:
        listening = [c.laddr for c in psutil.Process(daemon.proc.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize("name", ["../escape", "a/b", "Orders", ".hidden", "x" * 80])
def test_feed_names_that_could_leave_the_lake_are_refused(tmp_path: Path, name: str) -> None:
    """Config, registry and CLI refuse names that are not one safe folder name."""
    data = {"ksqldb": {"url": "http://x:1"}, "lake": {"root": "lake"},
            "feeds": [{"name": name, "source": "S", "kind": "stream"}]}
    with pytest.raises(ConfigError, match=r"\$\.feeds\[0\]\.name"):
        parse_config(data, path=str(tmp_path / "c.yaml"), environ={})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**data, "feeds": []}))
    done = subprocess.run([sys.executable, "-m", "lakeexportd", "feeds", "add", "-c", str(path), name,
                           "--source", "S", "--kind", "stream"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and not (tmp_path / "escape").exists()
