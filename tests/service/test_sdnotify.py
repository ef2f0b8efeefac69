from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakeexportd.service.sdnotify import Notifier


class Listener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address

    def messages(self) -> list[dict[str, str]]:
        out = []
        self.sock.settimeout(0.2)
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return out
            out.append(dict(line.split("=", 1) for line in data.decode().splitlines()))


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield Listener(sock, str(path))


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"lakeexportd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        yield Listener(sock, "@" + name)


def test_without_notify_socket_every_call_is_a_noop() -> None:
    """Outside systemd (no $NOTIFY_SOCKET) nothing is sent and nothing fails."""
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog_interval is None


def test_lifecycle_messages_reach_the_socket(listener: Listener) -> None:
    """READY, RELOADING (with MONOTONIC_USEC), STOPPING, STATUS and WATCHDOG arrive intact."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": listener.address})
    notifier.ready("2 feeds scheduled")
    notifier.reloading()
    notifier.stopping()
    notifier.watchdog()
    notifier.status("line one\nline two")
    got = listener.messages()
    assert got[0] == {"READY": "1", "STATUS": "2 feeds scheduled"}
    assert got[1]["RELOADING"] == "1" and int(got[1]["MONOTONIC_USEC"]) > 0
    assert got[2] == {"STOPPING": "1"}
    assert got[3] == {"WATCHDOG": "1"}
    assert got[4] == {"STATUS": "line one line two"}


def test_abstract_namespace_socket(abstract_listener: Listener) -> None:
    """A $NOTIFY_SOCKET starting with @ addresses the abstract namespace."""
    Notifier.from_environ({"NOTIFY_SOCKET": abstract_listener.address}).ready()
    assert abstract_listener.messages() == [{"READY": "1"}]


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    """WATCHDOG_USEC=10s means a ping every 5 s; another process's WATCHDOG_PID disables it."""
    env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "10000000"}
    assert Notifier.from_environ(env).watchdog_interval == 5.0
    mine = {**env, "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_environ(mine).watchdog_interval == 5.0
    other = {**env, "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_environ(other).watchdog_interval is None


def test_a_missing_socket_is_not_fatal(tmp_path: Path) -> None:
    """A send to a socket that does not exist returns False instead of raising."""
    assert Notifier(str(tmp_path / "gone.sock")).ready() is False
