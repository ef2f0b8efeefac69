"""The daemon: APScheduler jobs, signals and SIGHUP reload, metrics, logs, sdnotify, /status.

Owns: one long-running process and how feeds' runs are scheduled and observed.
May import: ``export``, ``audit``, ``feeds``, ``ksqldb``, ``lake``, ``config``, ``errors``,
``failpoints`` (everything below it). Imported by: ``cli`` only.
"""
