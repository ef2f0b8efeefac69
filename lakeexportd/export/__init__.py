"""One export run: ``DataLakeExporter`` and its steps (fetch -> write -> commit -> prune),
``backfill``, and ``exporter_from_config``, the one place that wires an exporter to ksqlDB.

Owns: the order of a run's steps and its exactly-once rules (DESIGN section 4).
May import: ``feeds``, ``ksqldb``, ``lake``, ``config``, ``errors``, ``failpoints``; never a
file-system call of its own (the lake's storage does those). Imported by: ``cli``, ``service``.
"""
