"""The S3 line of ``make bench``: the same export into a bucket on moto's S3 server.

``python -m moto.server`` runs as its own process on a free 127.0.0.1 port (polled until it
answers, stopped by its PID). lakeexportd exports the canned body into ``s3://<bucket>/lake``
exactly as the local line does into a folder; the data objects are then downloaded and
summarised like every other output, so the S3 line cannot win by writing less.

moto is pure Python and shares the machine's two cores with the export, so the export's wall
time on it is an upper bound of ours. Two figures separate the emulator's cost from ours:

- the CPU seconds the moto process spent during the export (``/proc/PID/stat``);
- ``upload_split``: the same data objects' bytes uploaded the way lakeexportd uploads them
  (obstore ``open_writer``, 8 MiB parts, 4 in flight), one file after the other, to moto, to a
  ``LocalStore`` and to a ``MemoryStore``: what the upload alone costs on each.

(The tests have their own server starter, ``tests/objectstores.py``; benchmarks import nothing
from the tests.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import obstore
from obstore.store import LocalStore, MemoryStore, S3Store

from lakeexportd.lake.storage.object import DEFAULT_PART_SIZE, DEFAULT_UPLOAD_CONCURRENCY

START_DEADLINE = 60.0  # seconds for moto to answer its first request
KEY_ID, SECRET = "bench", "bench-secret"  # moto takes any credentials
REGION = "us-east-1"
_TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """``python -m moto.server`` on a free loopback port, for the length of a ``with`` block."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
               "AWS_DEFAULT_REGION": REGION}
        self._log = open(workdir / "moto.log", "wb")  # closed in __exit__
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)

    def __enter__(self) -> MotoServer:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=2):
                    return self
            except urllib.error.HTTPError:
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise SystemExit(f"moto did not start on {self.endpoint}; log "
                                     f"{self._log.name}; is moto[server] installed?") from None
                time.sleep(0.1)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the moto process so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT", data=b"")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def store(self, bucket: str) -> S3Store:
        return S3Store(bucket, endpoint=self.endpoint, region=REGION, access_key_id=KEY_ID,
                       secret_access_key=SECRET, client_options={"allow_http": True})

    def lake_yaml(self, bucket: str, logs: Path) -> str:
        """The ``lake`` and ``logging`` sections of a config for ``s3://<bucket>/lake``."""
        return (f"lake:\n  root: s3://{bucket}/lake\n"
                f"  storage: {{endpoint: '{self.endpoint}', region: {REGION}, allow_http: true, "
                "access_key_id_env: BENCH_S3_KEY_ID, secret_access_key_env: BENCH_S3_SECRET}\n"
                f"logging: {{dir: '{logs}'}}\n")

    @staticmethod
    def env() -> dict[str, str]:
        return {"BENCH_S3_KEY_ID": KEY_ID, "BENCH_S3_SECRET": SECRET}


def download(store: S3Store, prefix: str, out: Path) -> tuple[int, int]:
    """Every data object under ``prefix`` into ``out`` (same relative paths): (objects, bytes)."""
    objects = size = 0
    for batch in obstore.list(store, prefix=prefix):
        for meta in batch:
            key = meta["path"]
            if not key.endswith(".parquet"):
                continue
            target = out / key.removeprefix(prefix).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bytes(obstore.get(store, key).bytes()))
            objects += 1
            size += meta["size"]
    return objects, size


@dataclass
class UploadSplit:
    """Seconds to upload the same files, one after the other, to each store."""

    mb: float
    moto_s: float
    local_s: float
    memory_s: float


def _upload_all(store: S3Store | LocalStore | MemoryStore, files: list[Path]) -> float:
    started = time.perf_counter()
    for i, path in enumerate(files):
        with obstore.open_writer(store, f"split/{i}.parquet", buffer_size=DEFAULT_PART_SIZE,
                                 max_concurrency=DEFAULT_UPLOAD_CONCURRENCY) as writer, \
                open(path, "rb") as source:
            while block := source.read(1 << 20):  # the Parquet writer hands over ~1 MiB pieces
                writer.write(block)
    return time.perf_counter() - started


def upload_split(moto: MotoServer, files: list[Path]) -> UploadSplit:
    """The data objects' bytes uploaded as lakeexportd uploads them, to moto, disk and memory."""
    bucket = "bench-upload-split"
    moto.create_bucket(bucket)
    with tempfile.TemporaryDirectory(prefix="bench-local-store-") as tmp:
        local = _upload_all(LocalStore(tmp), files)
    return UploadSplit(round(sum(p.stat().st_size for p in files) / 1e6, 1),
                       round(_upload_all(moto.store(bucket), files), 2), round(local, 2),
                       round(_upload_all(MemoryStore(), files), 2))
