"""A ksqlDB-compatible sandbox server with demo data and fault injection.

``Sandbox.start(...)`` runs it in-process for tests; ``lakeexportd sandbox`` runs it as a
command. See README.md in this folder for what it implements and leaves out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakeexportd.sandbox.faults import Fault

if TYPE_CHECKING:
    from lakeexportd.sandbox.harness import Sandbox

__all__ = ["Fault", "Sandbox"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the harness pulls in Hypercorn, which the CLI should not load
    # for commands that never start a server.
    if name == "Sandbox":
        from lakeexportd.sandbox.harness import Sandbox

        return Sandbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
