"""lakeexportd: keep a Parquet data lake in step with ksqlDB streams and tables."""

from __future__ import annotations

__version__ = "0.1.0"
