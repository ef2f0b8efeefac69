"""The one exception tree of lakeexportd.

Every error the product raises on purpose is a ``LakeExportError``; the branch says what the
operator (or the daemon) should do about it::

    LakeExportError
     +-- ConfigError            fix the config: exit 78 at start, keep the old config on reload
     |    +-- KsqlDBAuthError   ksqlDB answered 401/403: credentials or roles are wrong
     |    +-- KsqlDBTLSError    the TLS handshake failed: CA bundle, certificate or key is wrong
     +-- CatalogError           the Iceberg catalog failed or refused; the lake stands, the
     |                          catalog is caught up by the next run or `catalog sync`
     +-- FeedError              this feed is broken until its config (or its source) changes
     |    +-- KsqlDBRequestError     ksqlDB refused the statement (4xx with error_code/message)
     |    +-- SchemaError            unsupported type, or an incompatible schema change
     |    +-- LakeStateError         the lake on disk is not what the metadata says
     |         +-- CommitOutcomeUnknown  a commit's answer was lost and could not be read back
     |    +-- RejectedValueError     a row holds a value its column's type cannot keep exactly
     +-- TransientError         retry within the run, then wait for the next tick (exit 75)
          +-- KsqlDBUnavailable      connection failure, timeout, 429 or 5xx after the retries
          +-- KsqlDBStreamError      the answer broke off or ended with an error object
          +-- PushQueryEnded         a push query's body ended on a row boundary (/close-query,
          |                          ksqlDB restarting): every row sent was handed over
          +-- KsqlDBProtocolError    a line that is not JSON, or a row of the wrong length
          +-- FeedLocked             another writer holds the feed's lock
          +-- ExportAborted          shutdown stopped the run before it published anything

``StoreUnreachable`` is no ``LakeExportError`` but the ``OSError`` the storage seam raises when
an object store does not answer; whatever error it causes is a passing one (``exit_code``).

Messages name the thing, the value and the fix. Foreign errors (httpx, OSError, Arrow) are
translated with ``raise ... from exc`` in the one module that meets them.
"""

from __future__ import annotations

EX_OK = 0
EX_FAILED = 1
EX_USAGE = 2
EX_TEMPFAIL = 75
EX_CONFIG = 78


class StoreUnreachable(OSError):
    """The store did not answer, or kept failing through its client's retries (connection
    refused or cut, timeouts, 5xx, throttling): a passing condition, not a broken lake."""


def unreachable_cause(exc: BaseException) -> StoreUnreachable | None:
    """The ``StoreUnreachable`` behind ``exc`` (itself, or in its chain of causes), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, StoreUnreachable):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def store_error(doing: str, exc: OSError) -> LakeExportError:
    """``exc``, met while ``doing`` (\"cannot read X\"), as the error to raise: a store that did
    not answer is passing (``StoreUnavailable``, try again), anything else a ``LakeStateError``."""
    if isinstance(exc, StoreUnreachable):
        return StoreUnavailable(
            f"{doing}: the store did not answer ({exc.strerror}); nothing was changed by this. "
            "The daemon tries again at the feed's next run; a command can be run again once the "
            "store answers (`lakeexportd check-store` tests it; check lake.storage's endpoint "
            "and the network)"
        )
    return LakeStateError(f"{doing}: {exc}")


def exit_code(exc: BaseException) -> int:
    """The exit code for ``exc``: its own, but 75 (try again) when an unreachable store caused
    it, since the same command succeeds once the store answers; refused configs stay 78."""
    code = exc.exit_code if isinstance(exc, LakeExportError) else EX_FAILED
    if code != EX_CONFIG and unreachable_cause(exc) is not None:
        return EX_TEMPFAIL
    return code


class LakeExportError(Exception):
    """Base of every error lakeexportd raises on purpose."""

    exit_code = EX_FAILED


class ConfigError(LakeExportError):
    """The configuration is wrong; nothing will work until an operator fixes it."""

    exit_code = EX_CONFIG


class CatalogError(LakeExportError):
    """The Iceberg catalog could not follow the lake: down, slow, refused a commit, or the
    feed cannot be an Iceberg table. The lake's commit stands; the feed is marked behind."""


class FeedError(LakeExportError):
    """One feed cannot export until its configuration or its source changes."""

    exit_code = EX_FAILED


class TransientError(LakeExportError):
    """A passing failure: retried within the run, then at the next tick."""

    exit_code = EX_TEMPFAIL


class KsqlDBRequestError(FeedError):
    """ksqlDB refused a request with a 4xx status; carries its ``error_code`` and ``message``."""

    def __init__(self, status: int, error_code: int | None, message: str, *, what: str) -> None:
        self.status = status
        self.error_code = error_code
        self.ksql_message = message
        code = f" error_code {error_code}" if error_code is not None else ""
        super().__init__(f"ksqlDB rejected {what}: HTTP {status}{code}: {message}")


class KsqlDBAuthError(ConfigError):
    """ksqlDB answered 401 or 403: the username, password or roles are wrong."""

    def __init__(self, status: int, error_code: int | None, message: str, *, what: str) -> None:
        self.status = status
        self.error_code = error_code
        self.ksql_message = message
        hint = (
            "check ksqldb.username and the password in ksqldb.password_env/password_file"
            if status == 401
            else "grant this user access to the source in ksqlDB"
        )
        super().__init__(
            f"ksqlDB refused {what}: HTTP {status} error_code {error_code}: {message} ({hint})"
        )


class KsqlDBTLSError(ConfigError):
    """The TLS handshake with ksqlDB failed; retrying cannot help until the TLS settings change."""


class SchemaError(FeedError):
    """A column type lakeexportd cannot map, or a schema change it must not absorb."""


class RejectedValueError(FeedError):
    """A well-formed value its column's type cannot hold exactly (a DECIMAL that would need
    rounding or more digits): retrying reads the same row again, so the run fails as a feed
    error, not a transient one.

    The decoder knows the row (its number in the answer and, for streams, its ROWTIME); the
    export run adds the feed with ``for_feed``.
    """

    def __init__(
        self,
        *,
        column: str,
        ksql_type: str,
        value: str,
        reason: str,
        row: int,
        rowtime: int | None = None,
        feed: str | None = None,
    ) -> None:
        self.column = column
        self.ksql_type = ksql_type
        self.value = value
        self.reason = reason
        self.row = row
        self.rowtime = rowtime
        self.feed = feed
        where = f"feed {feed!r}: " if feed else ""
        which = f"the row with ROWTIME {rowtime}" if rowtime is not None else f"row {row}"
        super().__init__(
            f"{where}{which}, column {column} ({ksql_type}): {reason}; nothing was "
            f"published. lakeexportd never rounds: the feed fails at this row until the "
            f"source's type or data changes"
        )

    def for_feed(self, feed: str) -> RejectedValueError:
        return RejectedValueError(
            column=self.column, ksql_type=self.ksql_type, value=self.value, reason=self.reason,
            row=self.row, rowtime=self.rowtime, feed=feed,
        )


class LakeStateError(FeedError):
    """Files in the lake disagree with what lakeexportd expects (corrupt metadata, stray paths)."""


class CommitOutcomeUnknown(LakeStateError):
    """A ``_metadata.json`` commit failed in a way that may still have landed (or land late),
    and reading it back failed too: the run keeps its data files for the next run, whose load
    sees whichever document is there and whose cleanup judges them by it."""


class KsqlDBUnavailable(TransientError):
    """ksqlDB could not be reached or kept answering 429/5xx through every retry."""


class KsqlDBStreamError(TransientError):
    """A query's answer is incomplete: it broke off, or ended with a mid-stream error object."""

    def __init__(self, message: str, *, error_code: int | None = None) -> None:
        self.error_code = error_code
        super().__init__(message)


class PushQueryEnded(TransientError):
    """ksqlDB ended a push query's body cleanly: after the last complete row, with no error.

    Unlike a ``KsqlDBStreamError`` (the connection broke, maybe mid-row, or ksqlDB wrote an
    error line), nothing was cut: the rows handed over are all the server sent. Reconnect
    either way; the committed offsets say where from.
    """


class KsqlDBProtocolError(TransientError):
    """ksqlDB sent something that is not its wire format (bad JSON, wrong row length)."""


class StoreUnavailable(TransientError):
    """The lake's object store could not be reached (network, endpoint, throttling)."""


class FeedLocked(TransientError):
    """Another process holds the feed's lock; this run is skipped."""


class ExportAborted(TransientError):
    """Shutdown stopped a run before it published anything."""
