"""Fixtures of the system tests: each module defines its own ``sandbox``; ``setup`` uses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonproc import Setup, stop_all

from lakeexportd.sandbox import Sandbox


@pytest.fixture
def setup(tmp_path: Path, sandbox: Sandbox) -> Iterator[Setup]:
    s = Setup(tmp_path, sandbox)
    yield s
    stop_all(s.daemons)
    sandbox.clear_faults()
