"""Reading the lake back: ``report``/``stats`` summaries and ``verify`` (files against
``_metadata.json``, and with ``--source`` row counts against ksqlDB).

Owns: read-only checks; nothing here writes to the lake.
May import: ``feeds``, ``ksqldb``, ``lake``, ``config``, ``errors``. Imported by: ``cli``,
``service``. A sibling of ``export``: the two never import each other.
"""
