"""The real daemon process for system tests: start, scrape, signal, stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from scrape import Samples, parse, value

from lakeexportd.sandbox import Sandbox

LAKEEXPORTD = Path(sys.executable).with_name("lakeexportd")
REPO = Path(__file__).resolve().parents[2]
DEPLOY_FILES = (REPO / "deploy/prometheus/alerts.yml", REPO / "deploy/grafana/lakeexportd.json")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class DaemonProcess:
    """One ``lakeexportd run -c FILE`` process in its own process group."""

    def __init__(self, config: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.port = port
        self.stderr_path = config.with_suffix(".stderr")
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [str(LAKEEXPORTD), "run", "-c", str(config)], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                env={**os.environ, **(env or {})},
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def scrape(self) -> Samples:
        return parse(self.get("/metrics").text)

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.stderr}")
            try:
                return self.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False
        wait_for(ready, timeout, "/readyz")

    def runs(self, feed: str, result: str = "success") -> float:
        return value(self.scrape(), "lakeexportd_export_runs_total", feed=feed,
                     result=result) or 0

    def wait_runs(self, feed: str, count: int, timeout: float = 30) -> None:
        wait_for(lambda: self.runs(feed) >= count, timeout, f"{count} successful runs of {feed}")

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def stop_all(daemons: list[DaemonProcess]) -> None:
    """Stop every daemon still running (a test's teardown: whatever the test did)."""
    for daemon in daemons:
        if daemon.proc.poll() is None:
            try:
                daemon.stop(timeout=30)
            except subprocess.TimeoutExpired:
                pass  # stop() killed the process group


class Setup:
    """Writes configs for one test and starts daemons on them."""

    def __init__(self, tmp_path: Path, sandbox: Sandbox) -> None:
        self.tmp = tmp_path
        self.sandbox = sandbox
        self.lake = tmp_path / "lake"
        self.config = tmp_path / "lakeexportd.yaml"
        self.port = free_port()
        self.daemons: list[DaemonProcess] = []

    def write(self, feeds: list[dict[str, Any]], *, ksqldb: dict[str, Any] | None = None,
              logging: dict[str, Any] | None = None, **scheduler: Any) -> Path:
        data = {
            "ksqldb": {"url": self.sandbox.url, "connect_timeout": "2s", "read_timeout": "30s",
                       "max_retries": 1, **(ksqldb or {})},
            "lake": {"root": str(self.lake)},
            "scheduler": {"workers": 4, "stop_grace": "5s", **scheduler},
            "defaults": {"schedule": {"every": "1s"}, "settle_delay": "1s"},
            "metrics": {"listen": f"127.0.0.1:{self.port}"},
            "feeds": feeds,
            **({"logging": logging} if logging else {}),
        }
        self.config.write_text(yaml.safe_dump(data))
        return self.config

    def start(self, env: dict[str, str] | None = None) -> DaemonProcess:
        daemon = DaemonProcess(self.config, self.port, env)
        self.daemons.append(daemon)
        daemon.wait_ready()
        return daemon

    def metadata(self, kind: str, name: str) -> dict[str, Any]:
        folder = "streams" if kind == "stream" else "tables"
        doc: dict[str, Any] = json.loads((self.lake / folder / name / "_metadata.json")
                                         .read_text())
        return doc


