"""HTTP to ksqlDB through libcurl (pycurl): what carries the row stream at native speed.

ksqlDB sends each row of a ``/query-stream`` answer as its own HTTP/1.1 chunk (one DATA frame
on HTTP/2). h11, the pure-Python parser under httpx, drains about 130k such chunks a second;
libcurl parses them in C and hands the bytes to one C-level ``list.append`` per chunk (about 3M
a second here). ``CurlTransport.open`` starts a request on a ``CurlMulti``, drives it until the
response header is complete and returns a ``CurlResponse`` (status, headers, HTTP version,
``iter_raw()``, ``read()``). The read timeout is silence between bytes, measured here; the
multi loop wakes every 0.2 s, so ``close()`` from another thread takes effect promptly.

A push query's body is endless and silent while no rows come (ksqlDB sends no keep-alives), so
``open(idle_body=True)`` drops the read timeout once the header is in and turns on TCP
keep-alive instead (first probe after KEEPALIVE_IDLE s, then every KEEPALIVE_INTERVAL s; the
kernel's probe count, 9 on Linux, gives up after about two minutes): a silent server is
normal, a vanished one still ends the body with a ``"connect"`` failure. ``iter_raw(
idle_marks=True)`` yields an empty block whenever nothing more has arrived, so the reader can
hand over rows that a large-block decoder would otherwise hold back.

Failures are ``TransportFailure`` (``ksqldb``'s httpx adapter raises it too) with a ``kind``:
``"tls"`` (certificate or handshake: a configuration error), ``"timeout"`` (connect or read),
``"connect"`` (anything else on the way: refused, reset, cut short) or ``"aborted"`` (the
caller's ``cancel`` event was set while it waited for the header: shutdown).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Literal

import pycurl

FailureKind = Literal["tls", "timeout", "connect", "aborted"]
# libcurl's receive buffer (default 16 KiB): one recv() takes up to this much of a fast
# stream, and one perform() up to about ten of them. 1 MiB buffers made perform() return
# ~10 MB at a time and cost ~70 MB of peak RSS in an export; 128 KiB kept it at httpx's level.
BUFFER_SIZE = 128 << 10
# Bytes gathered from the socket before iter_raw() hands them over (fewer, larger blocks).
YIELD_BYTES = 512 << 10
WAKE_SECONDS = 0.2
# Certificate and handshake problems: the same settings fail the same way on the next try.
_TLS_ERRORS = frozenset({35, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91, 98})
_TIMEOUT = 28
_CONNECT_ERRORS = frozenset({5, 6, 7})  # proxy or host not resolved, connection refused
KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10


class TransportFailure(Exception):
    """A request that got no complete answer; ``kind`` says what the caller may do about it."""

    def __init__(self, kind: FailureKind, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.errno = errno


class CurlTransport:
    """Settings for one ksqlDB server; every ``open`` uses fresh handles (thread safe)."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        http2: bool = False,
        verify: bool = True,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        self.base_url = url.rstrip("/")
        self.scheme = url.split(":", 1)[0].lower()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.http2 = http2
        self.verify = verify
        self.ca_file = ca_file
        self.cert_file = cert_file
        self.key_file = key_file
        self._username = username
        self._password = password

    def __repr__(self) -> str:  # never the password
        return f"CurlTransport({self.base_url!r}, http2={self.http2}, verify={self.verify})"

    def close(self) -> None:
        """Nothing to release: each request owns its handles and closes them."""

    def open(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        cancel: threading.Event | None = None,
        idle_body: bool = False,
    ) -> CurlResponse:
        """Send the request; return once the response header is complete. A set ``cancel``
        ends the wait within WAKE_SECONDS (connecting, or a server silent before its header).
        ``idle_body``: the body may stay silent for any time (a push query), see above."""
        curl = pycurl.Curl()
        try:
            self._configure(curl, method, path, headers, body)
            if idle_body:
                curl.setopt(pycurl.TCP_KEEPALIVE, 1)
                curl.setopt(pycurl.TCP_KEEPIDLE, KEEPALIVE_IDLE)
                curl.setopt(pycurl.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        except BaseException:
            curl.close()
            raise
        response = CurlResponse(curl, self.read_timeout, idle_body=idle_body)
        response._wait_for_header(cancel)
        return response

    def _configure(
        self,
        curl: pycurl.Curl,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | None,
    ) -> None:
        curl.setopt(pycurl.URL, self.base_url + path)
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.BUFFERSIZE, BUFFER_SIZE)
        curl.setopt(pycurl.TCP_NODELAY, 1)
        curl.setopt(pycurl.FOLLOWLOCATION, 0)
        timeout_ms = max(1, int(self.connect_timeout * 1000))
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, timeout_ms)
        if self.http2 and self.scheme == "http":
            curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE)
        elif self.http2:
            curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)  # ALPN
        else:
            curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        if self.scheme == "https":
            self._configure_tls(curl)
        if self._username:
            curl.setopt(pycurl.HTTPAUTH, pycurl.HTTPAUTH_BASIC)
            curl.setopt(pycurl.USERNAME, self._username)
            curl.setopt(pycurl.PASSWORD, self._password or "")
        lines = [f"{k}: {v}" for k, v in headers.items()]
        lines += ["Expect:", "User-Agent: lakeexportd"]
        curl.setopt(pycurl.HTTPHEADER, lines)
        if method == "POST":
            curl.setopt(pycurl.POST, 1)
            curl.setopt(pycurl.POSTFIELDSIZE, len(body or b""))
            curl.setopt(pycurl.COPYPOSTFIELDS, body or b"")
        elif method != "GET":
            curl.setopt(pycurl.CUSTOMREQUEST, method)

    def _configure_tls(self, curl: pycurl.Curl) -> None:
        if not self.verify:
            curl.setopt(pycurl.SSL_VERIFYPEER, 0)
            curl.setopt(pycurl.SSL_VERIFYHOST, 0)
        elif self.ca_file:
            curl.setopt(pycurl.CAINFO, self.ca_file)
        else:
            # The same trust store as Python's ssl.create_default_context(): the bundled
            # libcurl's compiled-in default path may not exist on this system.
            paths = ssl.get_default_verify_paths()
            if paths.cafile:
                curl.setopt(pycurl.CAINFO, paths.cafile)
            if paths.capath:
                curl.setopt(pycurl.CAPATH, paths.capath)
        if self.cert_file:
            curl.setopt(pycurl.SSLCERT, self.cert_file)
            curl.setopt(pycurl.SSLKEY, self.key_file or self.cert_file)


class CurlResponse:
    """One answer: ``status_code``, ``headers``, ``http_version`` once open, then the body."""

    def __init__(self, curl: pycurl.Curl, read_timeout: float, *, idle_body: bool = False) -> None:
        self.status_code = 0
        self.http_version = ""
        self.headers: dict[str, str] = {}
        self._curl = curl
        self._multi = pycurl.CurlMulti()
        self._read_timeout = read_timeout
        self._idle_body = idle_body
        # The read timeout counts from the moment the request can go out: connecting (and the
        # TLS handshake) is bounded by libcurl's connect timeout.
        self._connected = False
        # The write callback is this buffer's C-level extend: no Python frame per chunk, and
        # no object kept per row (one chunk per row is ksqlDB's framing).
        self._body = bytearray()
        self._header_done = False
        self._header_lines = 0
        self._done = False
        self._failure: TransportFailure | None = None
        self._closed = False
        # Held while libcurl runs; close() from another thread never frees handles in use.
        self._lock = threading.Lock()
        curl.setopt(pycurl.WRITEFUNCTION, self._body.extend)
        curl.setopt(pycurl.HEADERFUNCTION, self._header_line)
        self._multi.add_handle(curl)
        self._last_data = time.monotonic()

    def _header_line(self, line: bytes) -> None:
        self._header_lines += 1
        text = line.decode("latin-1").rstrip("\r\n")
        if text.startswith("HTTP/"):
            version, _, rest = text.partition(" ")
            self.http_version = "HTTP/2" if version in ("HTTP/2", "HTTP/2.0") else version
            self.status_code = int(rest[:3])
            self.headers = {}
        elif not text:
            if self.status_code >= 200:
                self._header_done = True
        elif ":" in text:
            name, _, value = text.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def _wait_for_header(self, cancel: threading.Event | None = None) -> None:
        try:
            while not self._header_done:
                if cancel is not None and cancel.is_set():
                    raise TransportFailure("aborted", "stopped by shutdown before the answer")
                if self._done:
                    self._raise_failure()
                    if not self._header_done:
                        raise TransportFailure("connect", "the server closed without an answer", 52)
                    break
                self._step(wait=True)
        except BaseException:
            self.close()
            raise

    def _step(self, *, wait: bool) -> int:
        """Let libcurl move the transfer on; the number of body bytes it brought.

        With ``wait``, and nothing arrived, wait up to WAKE_SECONDS for the socket first, and
        fail once the server has been silent for longer than the read timeout.
        """
        body = self._body
        with self._lock:
            if self._closed:
                raise TransportFailure("connect", "the response was closed")
            before, lines = len(body), self._header_lines
            self._perform()
            if wait and not self._done and len(body) == before and lines == self._header_lines:
                self._multi.select(WAKE_SECONDS)
                self._perform()
            if not self._connected and not self._done:
                self._connected = self._curl.getinfo(pycurl.PRETRANSFER_TIME) > 0
                if self._connected:
                    self._last_data = time.monotonic()
        if len(body) != before or lines != self._header_lines:
            self._last_data = time.monotonic()
        elif wait and self._connected and not self._done:
            if self._idle_body and self._header_done:
                return 0
            if time.monotonic() - self._last_data > self._read_timeout:
                raise TransportFailure(
                    "timeout",
                    f"ReadTimeout: no data from the server for {self._read_timeout:g} s",
                    _TIMEOUT,
                )
        return len(body) - before

    def _perform(self) -> None:
        while True:
            status, running = self._multi.perform()
            if status != pycurl.E_CALL_MULTI_PERFORM:
                break
        if running == 0 and not self._done:
            self._done = True
            _, _, failed = self._multi.info_read()
            if failed:
                _, errno, message = failed[0]
                self._failure = _failure(errno, message)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def iter_raw(self, *, idle_marks: bool = False) -> Iterator[bytes]:
        """The body as libcurl received it (chunked framing removed), in blocks of what had
        arrived, up to about YIELD_BYTES. ``idle_marks``: an empty block each time nothing
        more has arrived and the next bytes must be waited for (then every WAKE_SECONDS)."""
        body = self._body
        while True:
            if not body:
                if self._done:
                    self._raise_failure()
                    return
                if idle_marks:  # look without waiting first, and say so when it must wait
                    if self._step(wait=False) or self._done:
                        continue
                    yield b""
                self._step(wait=True)
                continue
            yield self._gather()

    def _gather(self) -> bytes:
        """What has arrived, topped up while more comes at once (up to YIELD_BYTES)."""
        body = self._body
        while len(body) < YIELD_BYTES and not self._done and self._step(wait=False):
            pass
        data = bytes(body)
        del body[:]
        return data

    def read(self) -> bytes:
        return b"".join(self.iter_raw())

    def close(self) -> None:
        """Release the handles; from another thread while iter_raw() runs, at its next wake."""
        if self._closed:
            return
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._lock.release()
        else:
            threading.Thread(target=self._release_later, daemon=True).start()

    def _release_later(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        try:
            self._multi.remove_handle(self._curl)
        except pycurl.error:
            pass
        self._curl.close()
        self._multi.close()


def _failure(errno: int, message: str) -> TransportFailure:
    if errno in _TLS_ERRORS:
        return TransportFailure("tls", f"TLSError: {message} (curl error {errno})", errno)
    if errno == _TIMEOUT:
        return TransportFailure("timeout", f"Timeout: {message} (curl error {errno})", errno)
    label = "ConnectError" if errno in _CONNECT_ERRORS else "ReadError"
    return TransportFailure("connect", f"{label}: {message} (curl error {errno})", errno)
