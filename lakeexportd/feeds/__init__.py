"""The feed registry (``<lake>/feeds/``) and ``FeedManager``: which feeds exist, their state
(active, disabled, archived) and how the YAML is applied to them.

May import: ``lake``, ``config``, ``errors``. Imported by: ``export``, ``audit``, ``service``,
``cli``. A sibling of ``ksqldb``: the registry never speaks to ksqlDB.
"""
