"""lakeexportd: keep a Parquet data lake in step with ksqlDB streams and tables."""

from __future__ import annotations

import os

__version__ = "0.1.0"

# Arrow picks its allocator once, when pyarrow loads, so the choice is made before any module
# imports it; an operator's own ARROW_DEFAULT_MEMORY_POOL wins. Why jemalloc: see
# parquet_writer.use_lean_arrow_memory.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
