"""Crash hooks: ``failpoint(name)`` kills the process when ``LAKEEXPORTD_FAILPOINT`` names it.

``LAKEEXPORTD_FAILPOINT=name`` kills at the first hit, ``name:N`` at the Nth. SIGKILL, not an
exception: no ``finally`` block, atexit hook or buffered flush may run, exactly as in a power
cut of the process (the page cache survives, which is what fsync ordering is about).

``name:enospc`` (or ``name:N:enospc``) raises ``OSError(ENOSPC)`` there instead: a disk that
fills up at exactly that step, for the error paths a real full disk cannot hit on cue.

``name:stop`` (or ``name:N:stop``) sends the process SIGSTOP there instead: it freezes at
exactly that step (every thread, lease renewals included) until a SIGCONT, as a process
paused by a debugger, a VM migration or a long GC would; a test sees state ``T`` in
``/proc/<pid>/stat``. It stops once, at the Nth hit only.
"""

from __future__ import annotations

import errno
import os
import signal
import threading

ENV = "LAKEEXPORTD_FAILPOINT"

FAILPOINTS: dict[str, str] = {
    # metadata commit
    "metadata.before_tmp_write": "nothing of the new _metadata.json written yet",
    "metadata.after_tmp_write": "._metadata.json.tmp written, not fsynced",
    "metadata.after_tmp_fsync": "temp fsynced, before os.replace",
    "metadata.after_replace": "_metadata.json replaced, directory not fsynced",
    "metadata.after_dir_fsync": "commit durable, before returning",
    # stream export (AppendSink)
    "append.after_mkdir": "a new partition directory created",
    "append.after_open_temp": "an empty temp data file created",
    "append.after_row_group": "a row group written to a temp data file",
    "append.after_lru_close": "least recently used partition file closed",
    "append.after_roll": "a file reached max_rows_per_file and a new part was opened",
    "append.before_close": "finish() started, writers still open",
    "append.after_close": "a temp data file closed, not fsynced",
    "append.after_file_fsync": "a temp data file fsynced, not renamed",
    "append.before_rename": "just before a temp data file is renamed to its final name",
    "append.after_rename": "a data file has its final name",
    "append.after_all_renames": "every data file renamed, directories not fsynced",
    "append.after_dir_fsync": "a partition directory fsynced",
    "append.after_finish": "files durable, before the metadata commit",
    "append.mid_abort": "abort() removed one temp file of several",
    # table snapshot (SnapshotSink)
    "snapshot.after_staging_dir": "staging version directory created",
    "snapshot.after_open_temp": "an empty temp snapshot file created",
    "snapshot.after_row_group": "a row group written to a temp snapshot file",
    "snapshot.after_roll": "a snapshot file reached max_rows_per_file, next part opened",
    "snapshot.after_empty_file": "zero-row snapshot file written for an empty table",
    "snapshot.after_close": "a temp snapshot file closed, not fsynced",
    "snapshot.after_file_fsync": "a temp snapshot file fsynced, not renamed",
    "snapshot.before_file_rename": "just before a staged snapshot file gets its final name",
    "snapshot.after_file_rename": "a staged snapshot file has its final name",
    "snapshot.after_staging_fsync": "staging version directory fsynced, not published",
    "snapshot.before_publish": "just before the version directory is renamed into the feed",
    "snapshot.after_publish": "version directory visible, feed directory not fsynced",
    "snapshot.after_publish_fsync": "version published and durable, before the metadata commit",
    "snapshot.mid_abort": "abort() started removing the staging directory",
    # table version pruning (after the commit that dropped them)
    "prune.before_delete": "commit done, no old version removed yet",
    "prune.mid_version": "one file of an old version removed, directory still there",
    "prune.after_version": "one old version directory removed",
    "prune.after_all": "every old version removed",
    # stream retention (after the commit that dropped the partitions)
    "retention.before_delete": "commit done, no old partition removed yet",
    "retention.mid_partition": "one file of an old partition removed",
    "retention.after_partition": "one old day partition removed",
    "retention.after_parents": "empty month/year directories removed",
    # orphan cleanup (start of each run, `lakeexportd repair`)
    "cleanup.before": "orphans found, nothing removed",
    "cleanup.after_temp": "one temp file removed",
    "cleanup.after_data_file": "one unlisted data file removed",
    "cleanup.after_version_dir": "one unlisted version directory removed",
    "cleanup.after_staging": "the feed's staging directory removed",
    "cleanup.after_empty_dirs": "empty partition directories removed",
    # storage tiering (lake/tiering.py)
    "tier.after_object": "one data object rewritten in the colder class, not yet recorded",
    "tier.before_commit": "a batch of objects rewritten, _metadata.json not yet committed",
    "tier.after_commit": "a batch's classes recorded in _metadata.json, lock still held",
    # compaction (lake/compaction.py)
    "compact.after_open_temp": "an empty compacted output file created",
    "compact.after_row_group": "a row group written to a compacted output",
    "compact.after_close": "a compacted output closed, not fsynced",
    "compact.after_file_fsync": "a compacted output fsynced, not yet under its final name",
    "compact.after_file": "a compacted output under its final name, not listed",
    "compact.before_commit": "a day's outputs written, _metadata.json not yet committed",
    "compact.after_commit": "outputs listed, inputs retired, lock still held",
    # export run (exporter.py)
    "export.after_cleanup": "orphans of earlier runs removed, nothing queried yet",
    "export.after_header": "query answered with its header, no row written",
    "export.after_first_batch": "one batch handed to the sink",
    "export.before_commit": "files published under final names, metadata not committed",
    "export.after_commit": "metadata committed, old versions or partitions not yet deleted",
    "export.after_prune": "run complete, lock still held",
    # Delta feeds (export/delta_run.py, lake/delta.py)
    "realtime.after_rows": "a realtime feed's rows written to open files, not committed",
    "realtime.before_rotate": "a rotation is due, its files still open",
    "realtime.before_commit": "a rotation's files closed under final names, not committed",
    "realtime.after_commit": "a rotation committed with its offsets, the next not begun",
    "delta.after_create": "the Delta table created (version 0), no data file written",
    "delta.before_log_commit": "files written, fence passed, Delta log commit not yet tried",
    "delta.after_log_commit": "the Delta log commit landed, _metadata.json not yet rewritten",
    "compact.delta_after_optimize": "a closed day of a Delta stream optimized, not vacuumed",
    # the Iceberg catalog (catalog/iceberg.py), after the lake's own commit
    "catalog.after_create": "the feed's Iceberg table created, no file registered yet",
    "catalog.before_commit": "the lake committed, the catalog's snapshot built, not committed",
    "catalog.after_commit": "the catalog's snapshot committed, older snapshots not expired",
    # feed lock
    "lock.after_acquire": "feed lock held, nothing done yet",
    "lock.before_release": "work done, lock about to be released",
}

_hits: dict[str, int] = {}
_guard = threading.Lock()


def failpoint(name: str) -> None:
    """Kill the process here if ``LAKEEXPORTD_FAILPOINT`` selects ``name`` (and this hit)."""
    if name not in FAILPOINTS:
        raise KeyError(f"failpoint {name!r} is not declared in FAILPOINTS")
    armed = os.environ.get(ENV)
    if not armed:
        return
    target, *options = armed.split(":")
    if target != name:
        return
    enospc = "enospc" in options
    stop = "stop" in options
    nth = next((int(o) for o in options if o.isdigit()), 1)
    with _guard:
        _hits[name] = _hits.get(name, 0) + 1
        count = _hits[name]
    if count < nth:
        return
    if enospc:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (injected at {name})")
    if stop:
        if count == nth:  # once: after the SIGCONT the process runs on normally
            os.kill(os.getpid(), signal.SIGSTOP)
        return
    os.kill(os.getpid(), signal.SIGKILL)
