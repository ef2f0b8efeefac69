"""Fixtures of the system tests: each module defines its own ``sandbox``; ``setup`` uses it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonproc import Setup

from lakeexportd.sandbox import Sandbox


@pytest.fixture
def setup(tmp_path: Path, sandbox: Sandbox) -> Iterator[Setup]:
    s = Setup(tmp_path, sandbox)
    yield s
    for daemon in s.daemons:
        if daemon.proc.poll() is None:
            try:
                daemon.stop(timeout=30)
            except subprocess.TimeoutExpired:
                pass  # stop() killed the process group
    sandbox.clear_faults()
