"""The ``lakeexportd sandbox`` command: ready line, requests, clean stop, taken port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from lakeexportd.cli.commands import build_parser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lakeexportd", "sandbox", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_subprocess_serves_and_stops(signum: int) -> None:
    """It prints one ready line, serves requests with auth, and exits 0 on SIGTERM/SIGINT."""
    port = free_port()
    proc = start("--port", str(port), "--preload", "100", "--user", "bob",
                 "--password-env", "SANDBOX_TEST_PW", "--fault", "status:status=429,path=/ksql",
                 env={"SANDBOX_TEST_PW": "pw"})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"sandbox listening on http://127.0.0.1:{port}\n"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=("bob", "pw")) as c:
            assert c.get("/info").status_code == 200
            r = c.post("/query-stream", json={"sql": "SELECT * FROM PRODUCT_COUNTS;"})
            assert r.status_code == 200
            assert c.post("/ksql", json={"ksql": "SHOW TABLES;"}).status_code == 429
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_port_taken() -> None:
    """A port already in use fails at once with a clear message and a non-zero exit."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = start("--port", str(port))
        _, err = proc.communicate(timeout=20)
    assert proc.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "pick another with --port" in err


def test_help_lists_flags() -> None:
    """The sandbox command has help naming its flags."""
    text = build_parser()._subparsers._group_actions[0].choices["sandbox"].format_help()  # type: ignore[union-attr]
    for flag in ("--port", "--rate", "--seed", "--preload", "--preload-days", "--user",
                 "--password-env", "--fault"):
        assert flag in text


def test_id_prefix_gives_a_start_its_own_transaction_ids() -> None:
    """--id-prefix names every TRANSACTION_ID (the demo gives each start its own); a bad
    prefix is refused."""
    port = free_port()
    proc = start("--port", str(port), "--preload", "20", "--id-prefix", "run7_")
    try:
        assert proc.stdout is not None and "listening" in proc.stdout.readline()
        body = httpx.post(f"http://127.0.0.1:{port}/query-stream",
                          json={"sql": "SELECT TRANSACTION_ID FROM TRANSACTION_STREAM;"}).text
        ids = [line.strip('["]') for line in body.splitlines()[1:]]
        assert len(ids) == 20 and all(i.startswith("run7_") for i in ids)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    bad = subprocess.run([sys.executable, "-m", "lakeexportd", "sandbox", "--id-prefix", "a b"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "--id-prefix" in bad.stderr
