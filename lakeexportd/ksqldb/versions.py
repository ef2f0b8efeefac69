"""Which ksqlDB versions speak which query API: the one place that reads a version string.

``/query-stream`` in the delimited format over HTTP/1.1 came with ksqlDB 0.24 (Confluent
Platform 7.2); older servers get the legacy ``/query``. Version strings come in both
numberings (``0.29.0``, ``v7.4.1``); one that cannot be read is taken to be new.
"""

from __future__ import annotations

import re


def supports_query_stream(version: str) -> bool:
    """Whether a server speaks ``/query-stream`` over HTTP/1.1 (ksqlDB 0.24+, CP 7.2+)."""
    m = re.match(r"v?(\d+)\.(\d+)", version)
    if not m:
        return True
    major, minor = int(m[1]), int(m[2])
    if major == 0:
        return minor >= 24
    if major >= 5:  # Confluent Platform numbering: CP 7.2 ships ksqlDB 0.26
        return (major, minor) >= (7, 2)
    return True
