"""`make run`'s demo: port checks, and Ctrl-C stopping the sandbox and the daemon."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from lakeexportd.cli.demo import DEMO_CONFIG, port_problem


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_taken_port_is_named_with_what_to_do() -> None:
    """The port check names the port, its use and how to find the process holding it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        problem = port_problem("127.0.0.1", port, "the sandbox ksqlDB")
    assert problem is not None
    assert f"port {port}" in problem and "the sandbox ksqlDB" in problem and "ss -ltnp" in problem
    assert port_problem("127.0.0.1", free_port(), "x") is None


def test_a_port_in_time_wait_counts_as_free() -> None:
    """A port left in TIME_WAIT by a stopped `make run` is free again (servers reuse it)."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its port enters TIME_WAIT
        client.recv(1)
        client.close()
    with socket.socket() as plain:  # what the old check did: a bind without SO_REUSEADDR fails
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
    assert port_problem("127.0.0.1", port, "the sandbox ksqlDB") is None


def test_demo_config_uses_the_documented_ports() -> None:
    """etc/demo.yaml points at the sandbox on 18088 and serves metrics on 9464."""
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    assert data["ksqldb"]["url"] == "http://127.0.0.1:18088"
    assert data["metrics"]["listen"] == "127.0.0.1:9464"


def test_demo_exports_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    """The demo starts the sandbox and the daemon; SIGINT stops both and exits 0."""
    sandbox_port, metrics_port = free_port(), free_port()
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    data["ksqldb"]["url"] = f"http://127.0.0.1:{sandbox_port}"
    data["metrics"]["listen"] = f"127.0.0.1:{metrics_port}"
    data["lake"]["root"] = str(tmp_path / "lake")
    data["feeds"] = [f for f in data["feeds"] if f["name"] in ("transaction_stream",
                                                                "user_summary")]
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(data))
    demo = subprocess.Popen([sys.executable, "-m", "lakeexportd.cli.demo", "-c", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        metadata = tmp_path / "lake/tables/user_summary/_metadata.json"
        while not metadata.exists():
            assert demo.poll() is None, demo.stdout.read() if demo.stdout else ""
            assert time.monotonic() < deadline, "no export within 90 s"
            time.sleep(0.2)
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:  # the test failed: the children run in their own sessions
            for child in psutil.Process(demo.pid).children(recursive=True):
                child.kill()
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, output
    assert "demo: stopped" in output
    assert not listening(sandbox_port) and not listening(metrics_port)
