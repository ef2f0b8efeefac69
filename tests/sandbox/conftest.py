"""Fixtures: one shared read-only sandbox, and fresh ones for tests that change state."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from lakeexportd.sandbox import Sandbox

FIXED_NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z: rows and their ROWTIMEs are reproducible


def fixed_clock() -> float:
    return FIXED_NOW


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=7, preload=2000, clock=fixed_clock) as sb:
        yield sb


@pytest.fixture()
def client(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, timeout=20) as c:
        yield c


@pytest.fixture()
def fresh() -> Iterator[Callable[..., Sandbox]]:
    """Start throwaway sandboxes (stopped at the end of the test)."""
    started: list[Sandbox] = []

    def start(**kwargs: Any) -> Sandbox:
        kwargs.setdefault("seed", 3)
        kwargs.setdefault("clock", fixed_clock)
        sb = Sandbox.start(**kwargs)
        started.append(sb)
        return sb

    yield start
    for sb in started:
        sb.stop()
