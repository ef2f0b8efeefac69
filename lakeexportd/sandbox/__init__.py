"""A ksqlDB-compatible sandbox server with demo data and fault injection.

``Sandbox.start(...)`` runs it in-process for tests; ``lakeexportd sandbox`` runs it as a
command. See README.md in this folder for what it implements and leaves out.

The sandbox owns everything its server side needs: ksqlDB type strings (``sqltypes``), value
text (``formatting``), error bodies (``errors``), SQL (``sql``, ``where``), and the tests'
ground truth with the Arrow types lakeexportd must write, stated by hand (``expected``). It
imports nothing else of lakeexportd (only ``lakeexportd.sandbox.*`` and third-party
libraries; import-linter's contract in pyproject.toml holds it to that): the end-to-end tests
use it as an independent witness of ksqlDB, and a witness built from the client's own types
or decoders would agree with the client's mistakes instead of catching them.
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
