"""Opening a request to ksqlDB: HTTP errors as the error tree, transient failures retried.

A 2xx answer is handed to the caller. 401/403 are ``KsqlDBAuthError`` and the other 4xx
but 429 ``KsqlDBRequestError``, at once: asking again would get the same answer, as would a
TLS failure (``KsqlDBTLSError``). Failures before the header (connection errors, timeouts, 429,
5xx) are retried with exponential backoff and full jitter up to ``max_retries``, then raised
as ``KsqlDBUnavailable``. A set ``cancel`` event (shutdown past stop_grace) ends the wait for
a header, a backoff and the retry loop within 0.2 s with ``ExportAborted``.

Every answer and every retry is shown to a ``RequestObserver`` (the daemon's metrics).
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import structlog

from lakeexportd.errors import (
    ExportAborted,
    KsqlDBAuthError,
    KsqlDBRequestError,
    KsqlDBTLSError,
    KsqlDBUnavailable,
)
from lakeexportd.ksqldb.curl_stream import TransportFailure
from lakeexportd.ksqldb.transport import Response, Transport

log = structlog.get_logger(__name__)


class RequestObserver(Protocol):
    """Sees every HTTP answer (for ``lakeexportd_ksqldb_requests_total``) and every retry."""

    def request(self, endpoint: str, code: str) -> None: ...

    def retry(self, endpoint: str) -> None: ...


class _NoObserver:
    def request(self, endpoint: str, code: str) -> None:
        pass

    def retry(self, endpoint: str) -> None:
        pass


class RetryingSender:
    """Sends requests over one transport with one retry policy."""

    def __init__(
        self,
        transport: Transport,
        *,
        max_retries: int,
        backoff_base: float,
        backoff_max: float,
        observer: RequestObserver | None,
        sleep: Callable[[float], None],
    ) -> None:
        self.transport = transport
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._observer: RequestObserver = observer or _NoObserver()
        self._sleep = sleep

    @contextmanager
    def send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json_body: dict[str, Any] | None = None,
        accept: str = "application/json",
        cancel: threading.Event | None = None,
        idle_body: bool = False,
    ) -> Iterator[Response]:
        """Open a streamed response with a 2xx status, retrying transient failures first
        (``idle_body``: a push query's body, silent for any time: ``Transport.open``)."""
        content = json.dumps(json_body).encode() if json_body is not None else None
        headers = {"Accept": accept}
        if content is not None:
            headers["Content-Type"] = "application/json"
        base_url = self.transport.base_url
        attempt = 0
        while True:
            failure: str
            try:
                response = self.transport.open(
                    method, path, headers=headers, body=content, cancel=cancel,
                    idle_body=idle_body,
                )
            except TransportFailure as exc:
                if exc.kind == "aborted":
                    raise ExportAborted(
                        f"{what}: stopped by shutdown while waiting for ksqlDB's answer "
                        f"(attempt {attempt + 1}); nothing was published"
                    ) from exc
                self._observer.request(path, "error")
                if exc.kind == "tls":
                    raise KsqlDBTLSError(
                        f"{what}: TLS with ksqlDB at {base_url} failed ({exc}); check "
                        "ksqldb.tls.ca_file (the CA that signed the server's certificate), "
                        "cert_file/key_file if the server requires a client certificate, "
                        "and that the URL's host name matches the certificate"
                    ) from exc
                failure = f"cannot reach ksqlDB at {base_url} ({exc})"
                if self.transport.scheme == "https" and exc.kind == "connect":
                    # TLS 1.3 servers that require a client certificate just hang up.
                    failure += (
                        "; if the server requires a client certificate, set "
                        "ksqldb.tls.cert_file and key_file"
                    )
            else:
                self._observer.request(path, str(response.status_code))
                if response.status_code < 300:
                    try:
                        yield response
                    finally:
                        response.close()
                    return
                body = _read_error_body(response)
                code, message = _error_fields(body)
                if response.status_code in (401, 403):
                    raise KsqlDBAuthError(response.status_code, code, message, what=what)
                if response.status_code != 429 and response.status_code < 500:
                    raise KsqlDBRequestError(response.status_code, code, message, what=what)
                failure = (
                    f"ksqlDB answered HTTP {response.status_code} error_code {code}: {message}"
                )
            if attempt >= self.max_retries:
                raise KsqlDBUnavailable(
                    f"{what}: {failure}; gave up after {attempt + 1} attempts "
                    f"(ksqldb.max_retries = {self.max_retries})"
                )
            attempt += 1
            self._observer.retry(path)
            delay = random.uniform(
                0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
            )
            log.warning("ksqldb.retry", endpoint=path, attempt=attempt,
                        of=self.max_retries + 1, wait_s=round(delay, 3), cause=failure)
            if cancel is not None:
                if cancel.wait(delay):
                    raise ExportAborted(
                        f"{what}: stopped by shutdown before retry {attempt} ({failure}); "
                        "nothing was published"
                    )
            else:
                self._sleep(delay)


def _read_error_body(response: Response) -> bytes:
    try:
        return response.read()[:65536]
    except TransportFailure:
        return b""
    finally:
        response.close()


def _error_fields(body: bytes) -> tuple[int | None, str]:
    try:
        obj = json.loads(body)
    except ValueError:
        return None, body.decode("utf-8", "replace").strip()[:500] or "(empty body)"
    if isinstance(obj, dict):
        code = obj.get("error_code")
        return (code if isinstance(code, int) else None), str(obj.get("message", ""))
    return None, str(obj)[:500]
