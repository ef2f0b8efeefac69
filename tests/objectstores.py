"""Real object-store servers for the tests: moto (S3) and Azurite (Azure Blob), each its own process.

Each server is started on a free loopback port, waited for until it answers HTTP (polling with a
deadline, never a fixed sleep), and stopped by its PID at the end of the session (SIGTERM, then
SIGKILL). Its output goes to a log file whose tail is in every failure message. A server that
cannot start fails the fixture with what to run; tests never skip.

- **S3**: ``python -m moto.server`` from the test extras (``moto[server]`` in pyproject.toml).
- **Azure Blob**: ``azurite-blob`` pinned in ``tools/azurite/package-lock.json``, installed by
  ``npm ci --prefix tools/azurite`` (``make test`` and ``.ci/run`` do it).

Neither server checks real credentials: the keys here are the emulators' well-known test values.
Buckets and containers are created over plain HTTP (obstore cannot create them): moto takes an
unsigned ``PUT /bucket``; Azurite wants a SharedKey-signed request, signed by ``_azure_request``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from obstore.store import AzureStore, S3Store

ROOT = Path(__file__).resolve().parents[1]
AZURITE_DIR = ROOT / "tools" / "azurite"
AZURITE_BIN = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
AZURITE_INSTALL = "npm ci --prefix tools/azurite"

START_DEADLINE = 60.0  # seconds for a server to answer its first request (cold start on 2 busy cores)
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL

# Azurite's well-known development account (the same in every Azurite and Azure SDK).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURE_API_VERSION = "2021-10-04"


def tail(log: Path, lines: int = 30) -> str:
    """The last ``lines`` of a server's log, for failure messages."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unique_name(prefix: str) -> str:
    """A bucket or container name no other test uses: lowercase letters, digits and hyphens."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class ServerStartError(RuntimeError):
    """A test server did not start; the message says why and what to run."""


@dataclass
class ServerProcess:
    """One server process started by the tests, stopped by its PID."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log, lines)

    def wait_until_answers(self, url: str, deadline: float = START_DEADLINE) -> None:
        """Poll ``url`` until the server answers any HTTP status; fail if it exits or times out.

        Between polls the wait is on the process itself, so a server that dies is seen at once.
        """
        end = time.monotonic() + deadline
        last_error = "no attempt"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # an HTTP answer, whatever its status, means the server serves
            except OSError as exc:
                last_error = repr(exc)
            if time.monotonic() > end:
                self.stop()
                raise ServerStartError(
                    f"{self.name} (pid {self.pid}) did not answer {url} within {deadline:.0f}s "
                    f"(last error {last_error}); log {self.log}:\n{self.log_tail()}"
                )
            try:
                code = self.process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            raise ServerStartError(
                f"{self.name} exited with status {code} before answering {url}; "
                f"log {self.log}:\n{self.log_tail()}"
            )

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; always reaps the process."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_GRACE)


def spawn(name: str, argv: list[str], log: Path, env: Mapping[str, str] | None = None) -> ServerProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # a Ctrl-C of pytest reaches pytest, which stops it by PID
        )
    return ServerProcess(name, process, log)


def start_on_free_port(
    launch: Callable[[int], ServerProcess], probe_url: Callable[[int], str], attempts: int = 3
) -> tuple[ServerProcess, int]:
    """Launch on a free port and wait until it answers; if it exits first (another process took
    the port between ``free_port`` and the bind), try again on a new port."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        server = launch(port)
        try:
            server.wait_until_answers(probe_url(port))
        except ServerStartError:
            if server.process.returncode is None or attempt == attempts:
                raise
            continue
        return server, port
    raise AssertionError("unreachable")


# --- S3: moto in server mode ------------------------------------------------------------------


@dataclass
class MotoS3:
    """A running ``moto.server``: a real S3 endpoint on 127.0.0.1."""

    server: ServerProcess
    endpoint: str
    region: str = "us-east-1"
    access_key_id: str = "testing"
    secret_access_key: str = "testing"

    @property
    def config(self) -> dict[str, Any]:
        """obstore S3 config keys (as ``lake.storage`` names them) for this server."""
        return {
            "endpoint": self.endpoint,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique one by default) and return its name."""
        bucket = name or unique_name("lake")
        request = urllib.request.Request(f"{self.endpoint}/{bucket}", method="PUT", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"moto CreateBucket {bucket}: HTTP {response.status}")
        return bucket

    def store(self, bucket: str, **kwargs: Any) -> S3Store:
        """An obstore S3Store for ``bucket`` on this server (plain HTTP allowed)."""
        return S3Store(
            bucket,
            **self.config,
            client_options={"allow_http": True},
            **kwargs,
        )

    def storage_classes(self, bucket: str) -> dict[str, str]:
        """Key -> storage class as the server keeps it (an unsigned ListObjectsV2 of the bucket).

        obstore does not read the class back (not in ``get().attributes`` nor in ``ObjectMeta``).
        """
        url = f"{self.endpoint}/{bucket}?list-type=2"
        with urllib.request.urlopen(url, timeout=10) as response:
            root = ElementTree.fromstring(response.read())
        ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
        return {
            item.findtext("s3:Key", "", ns): item.findtext("s3:StorageClass", "", ns)
            for item in root.iterfind("s3:Contents", ns)
        }


def start_moto(workdir: Path) -> MotoS3:
    env = dict(os.environ)
    # moto needs no real credentials; these keep the botocore inside it from looking for any.
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1"})

    def launch(port: int) -> ServerProcess:
        env["MOTO_PORT"] = str(port)
        return spawn(
            "moto S3 server",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            workdir / "moto.log",
            env,
        )

    try:
        server, port = start_on_free_port(launch, lambda port: f"http://127.0.0.1:{port}/")
    except ServerStartError as exc:
        raise ServerStartError(
            f"{exc}\nIs moto[server] installed? Run `make install` (pip install -e '.[test]' "
            "with PIP_CONSTRAINT=requirements/test.lock)."
        ) from None
    return MotoS3(server, f"http://127.0.0.1:{port}")


# --- Azure Blob: Azurite ----------------------------------------------------------------------


@dataclass
class Azurite:
    """A running ``azurite-blob``: a real Azure Blob endpoint on 127.0.0.1 (path-style URLs)."""

    server: ServerProcess
    endpoint: str  # http://127.0.0.1:PORT/devstoreaccount1
    account_name: str = AZURITE_ACCOUNT
    account_key: str = AZURITE_KEY

    @property
    def config(self) -> dict[str, Any]:
        """obstore Azure config keys (as ``lake.storage`` names them) for this server."""
        return {
            "account_name": self.account_name,
            "account_key": self.account_key,
            "endpoint": self.endpoint,
        }

    def create_container(self, name: str | None = None) -> str:
        """Create a container (a fresh unique one by default) and return its name."""
        container = name or unique_name("lake")
        status, _ = self.request("PUT", container, {"restype": "container"})
        if status != 201:
            raise RuntimeError(f"Azurite Create Container {container}: HTTP {status}")
        return container

    def store(self, container: str, **kwargs: Any) -> AzureStore:
        """An obstore AzureStore for ``container`` on this server (plain HTTP allowed)."""
        return AzureStore(
            container,
            **self.config,
            client_options={"allow_http": True},
            **kwargs,
        )

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> tuple[int, dict[str, str] | bytes]:
        """A SharedKey-signed request to ``/<account>/<path>``: (status, headers for HEAD else body)."""
        return _azure_request(self, method, path, query or {}, headers or {}, body)


def _azure_request(
    server: Azurite,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
) -> tuple[int, dict[str, str] | bytes]:
    """Sign with SharedKey (Azure Storage's "Authorize with Shared Key", version 2009-09-19+)."""
    url_path = f"/{server.account_name}/{urllib.parse.quote(path)}"
    all_headers = {
        "x-ms-date": dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "x-ms-version": AZURE_API_VERSION,
        **{k.lower(): v for k, v in headers.items()},
    }
    length = str(len(body)) if body else ""
    standard = [
        method,
        all_headers.get("content-encoding", ""),
        all_headers.get("content-language", ""),
        length,
        all_headers.get("content-md5", ""),
        all_headers.get("content-type", ""),
        "",  # Date: x-ms-date is used instead
        all_headers.get("if-modified-since", ""),
        all_headers.get("if-match", ""),
        all_headers.get("if-none-match", ""),
        all_headers.get("if-unmodified-since", ""),
        all_headers.get("range", ""),
    ]
    canonical_headers = "".join(
        f"{name}:{all_headers[name].strip()}\n"
        for name in sorted(all_headers)
        if name.startswith("x-ms-")
    )
    # Path-style emulator URLs repeat the account: /<account>/<account>/<container>/<blob>.
    resource = f"/{server.account_name}{url_path}" + "".join(
        f"\n{name.lower()}:{query[name]}" for name in sorted(query, key=str.lower)
    )
    string_to_sign = "\n".join(standard) + "\n" + canonical_headers + resource
    signature = base64.b64encode(
        hmac.new(base64.b64decode(server.account_key), string_to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    all_headers["authorization"] = f"SharedKey {server.account_name}:{signature}"
    base = server.endpoint.rsplit("/", 1)[0]
    url = f"{base}{url_path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    request = urllib.request.Request(url, method=method, headers=all_headers, data=body or None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status = response.status
            if method == "HEAD":
                return status, {k.lower(): v for k, v in response.headers.items()}
            return status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _azurite_install_problem() -> str | None:
    """Why the pinned Azurite cannot run from tools/azurite, or None when it can."""
    if shutil.which("node") is None:
        return "Node.js is not on PATH (apt-get install nodejs npm)"
    if not AZURITE_BIN.exists():
        return f"Azurite is not installed in {AZURITE_DIR}"
    wanted = json.loads((AZURITE_DIR / "package.json").read_text())["dependencies"]["azurite"]
    installed_manifest = AZURITE_DIR / "node_modules" / "azurite" / "package.json"
    installed = json.loads(installed_manifest.read_text())["version"]
    if installed != wanted:
        return f"Azurite {installed} is installed in {AZURITE_DIR}, the pin is {wanted}"
    return None


def start_azurite(workdir: Path) -> Azurite:
    problem = _azurite_install_problem()
    if problem:
        raise ServerStartError(f"{problem}. Run `{AZURITE_INSTALL}` (make test does it).")
    location = workdir / "azurite-data"
    location.mkdir(parents=True, exist_ok=True)

    def launch(port: int) -> ServerProcess:
        return spawn(
            "Azurite blob server",
            [
                str(AZURITE_BIN),
                "--blobHost", "127.0.0.1",
                "--blobPort", str(port),
                "--location", str(location),
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",  # Azurite reports usage to a remote service unless told not to
            ],
            workdir / "azurite.log",
        )

    try:
        server, port = start_on_free_port(
            launch, lambda port: f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}?comp=list"
        )
    except ServerStartError as exc:
        raise ServerStartError(f"{exc}\nReinstall with `{AZURITE_INSTALL}`.") from None
    return Azurite(server, f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")


# --- One fresh bucket or container per test ---------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """A fresh, empty bucket (S3) or container (Azure) and a ready obstore store for it."""

    kind: str  # "s3" or "azure"
    name: str
    url: str  # s3://<bucket> or az://<container>: a lake.root without its prefix
    store: S3Store | AzureStore
    config: dict[str, Any]  # obstore config keys for the server (endpoint, credentials, ...)
    client_options: dict[str, Any]  # {"allow_http": True}: the emulators speak plain HTTP


def s3_bucket_on(server: MotoS3) -> Bucket:
    name = server.create_bucket()
    return Bucket("s3", name, f"s3://{name}", server.store(name), server.config,
                  {"allow_http": True})


def azure_container_on(server: Azurite) -> Bucket:
    name = server.create_container()
    return Bucket("azure", name, f"az://{name}", server.store(name), server.config,
                  {"allow_http": True})
