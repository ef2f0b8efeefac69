"""Fault injection: each fault applies to the next ``count`` matching requests.

Faults come from CLI flags (``--fault KIND:key=value,...``, every request for the whole run)
or from ``POST /_sandbox/faults``. Request-level kinds (latency, status, trickle) apply to any
non-admin path; row-level kinds apply only to query responses.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, fields
from typing import Any

REQUEST_KINDS = ("latency", "status", "trickle")
ROW_KINDS = (
    "cut_after_rows", "error_after_rows", "malformed_line", "wrong_column_count", "big_row_bytes",
    "end_push",
)
# Taken only by push queries, so a pull query on the way does not use up a fault meant for
# the long-lived query (a runner's realtime feed next to batch feeds).
PUSH_KINDS = ("end_push",)
KINDS = REQUEST_KINDS + ROW_KINDS
STATUSES = (429, 500, 503)


class FaultSpecError(ValueError):
    """A fault description that cannot be used; the message names the key and the fix."""


@dataclass
class Fault:
    """One fault. ``count`` None means every matching request."""

    kind: str
    path: str | None = None
    count: int | None = 1
    seconds: float = 1.0  # latency: before answering; trickle: between chunks
    status: int = 503
    rows: int = 0  # row kinds: rows written before the fault
    bytes: int = 1_048_576  # big_row_bytes: length of the huge STRING value
    chunk_bytes: int = 16  # trickle: bytes per chunk

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, default_count: int | None = 1) -> Fault:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise FaultSpecError(f"unknown fault keys {sorted(unknown)}; known: {sorted(known)}")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise FaultSpecError(f"fault kind {kind!r} is not one of {', '.join(KINDS)}")
        values = dict(raw)
        values.setdefault("count", default_count)
        if kind == "trickle":
            values.setdefault("seconds", 0.05)
        try:
            fault = cls(
                kind=str(kind), path=None if values.get("path") is None else str(values["path"]),
                count=None if values["count"] is None else int(values["count"]),
                seconds=float(values.get("seconds", 1.0)), status=int(values.get("status", 503)),
                rows=int(values.get("rows", 0)), bytes=int(values.get("bytes", 1_048_576)),
                chunk_bytes=int(values.get("chunk_bytes", 16)),
            )
        except (TypeError, ValueError) as exc:
            raise FaultSpecError(f"bad fault value in {raw!r}: {exc}") from exc
        if fault.count is not None and fault.count < 1:
            raise FaultSpecError("fault count must be at least 1 (or null for every request)")
        if min(fault.rows, fault.bytes, fault.chunk_bytes - 1) < 0 or fault.seconds < 0:
            raise FaultSpecError("fault rows, bytes, seconds must be >= 0, chunk_bytes >= 1")
        return fault

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """``KIND[:key=value,...]``, the CLI form; applies to every request unless count=N."""
        kind, _, rest = spec.partition(":")
        raw: dict[str, Any] = {"kind": kind.strip()}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise FaultSpecError(f"fault option {item!r} must be key=value")
            raw[key.strip()] = None if value.strip().lower() == "null" else value.strip()
        return cls.from_dict(raw, default_count=None)

    def matches(self, path: str, is_query: bool) -> bool:
        if self.path is not None and self.path != path:
            return False
        return self.kind in REQUEST_KINDS or is_query

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultSet:
    """The pending faults; thread-safe because tests add faults from another thread."""

    def __init__(self, faults: list[Fault] | None = None) -> None:
        self._lock = threading.Lock()
        self._faults = list(faults or [])

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_dict() for f in self._faults]

    def take(self, path: str, is_query: bool,
             kinds: tuple[str, ...] | None = None) -> dict[str, Fault]:
        """The faults this request gets (the first pending one of each kind), consumed;
        ``kinds`` None means every kind but the push-only ones."""
        taken: dict[str, Fault] = {}
        with self._lock:
            for fault in list(self._faults):
                wanted = fault.kind in kinds if kinds is not None else fault.kind not in PUSH_KINDS
                if not wanted or fault.kind in taken or not fault.matches(path, is_query):
                    continue
                taken[fault.kind] = fault
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
        return taken
