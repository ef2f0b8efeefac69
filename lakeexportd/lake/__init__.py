"""The lake: its layout, the Parquet sinks, ``_metadata.json`` (model, codec, atomic commit),
cleanup, the lock helper, rebuild and daemon presence.

Every byte goes through ``lake.storage`` (the seam where object stores and Delta plug in).
May import: ``config``, ``errors``, ``failpoints``. Imported by every layer above; never
imports ``ksqldb``, ``export`` or anything above it.
"""
