"""Fixtures shared by every test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lakecheck import close_clients


@pytest.fixture(autouse=True)
def _close_ksqldb_clients() -> Iterator[None]:
    """Close the HTTP clients a test opened through ``lakecheck.exporter``."""
    yield
    close_clients()
