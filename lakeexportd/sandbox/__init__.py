"""A ksqlDB-compatible sandbox server with demo data and fault injection.

``Sandbox.start(...)`` runs it in-process for tests; ``lakeexportd sandbox`` runs it as a
command. See README.md in this folder for what it implements and leaves out.
"""

from __future__ import annotations

from lakeexportd.sandbox.faults import Fault
from lakeexportd.sandbox.harness import Sandbox

__all__ = ["Fault", "Sandbox"]
