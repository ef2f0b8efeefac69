"""Small helpers shared by the sandbox tests."""

from __future__ import annotations

from typing import Any

import httpx


def query(client: httpx.Client, sql: str, **extra: Any) -> httpx.Response:
    headers = extra.pop("headers", None)
    return client.post("/query-stream", json={"sql": sql, **extra}, headers=headers)


def lines(response: httpx.Response) -> list[str]:
    text = response.text
    assert text.endswith("\n"), "every delimited line ends with LF"
    return text[:-1].split("\n")
