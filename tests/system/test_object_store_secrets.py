"""Cloud credentials appear nowhere the daemon or the CLI writes, on S3 (moto) and Azure (Azurite).

The real daemon exports with the secret read from a file (``*_file``), is sent a SIGHUP that
switches it to an environment variable (``*_env``), exports again, serves /metrics and /status,
and then meets a store that refuses: on Azurite a wrong account key (Azurite checks SharedKey
signatures: 403), on moto (which checks no credentials) a bucket that does not exist and an
endpoint where nothing listens. The CLI's status, metadata, files, verify and check-store run
too. Then every file under the test's folder (logs, registry, stderr), every object in the bucket
or container (``_metadata.json``, ``_lease.json``, Parquet bytes) and every captured output is
searched for the secrets and their obvious encodings: as written, URL-encoded, base64 of the text
and, for an Azure key, its decoded bytes. ``test_the_search_finds_each_planted_encoding`` shows
the search fails when any of them is planted.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import obstore
import pytest
from daemonproc import DaemonProcess, free_port, wait_for
from objectstores import Bucket

from lakeexportd.sandbox import Sandbox

# moto accepts any secret: one shaped like an AWS secret (with /, + and =, so its URL-encoded
# form differs from the text).
S3_SECRET = "lakeexportdS3/Secret+Key=Zq7wX9pL2mN4vB8cR1tY6uI0oP3"
S3_KEY_ID = "AKIALAKEEXPORTDTEST1"
# Azurite checks the signature: the right key is its well-known one; a wrong one is refused (403).
AZURE_WRONG_KEY = base64.b64encode(b"lakeexportd wrong account key for the secrets test, 64 bytes!!!").decode()


def encodings(secret: str) -> list[bytes]:
    """The secret as written, URL-encoded, base64 of its text, and its bytes if it is base64."""
    forms = {secret.encode(), urllib.parse.quote(secret, safe="").encode(),
             urllib.parse.quote_plus(secret).encode(), base64.b64encode(secret.encode())}
    try:
        raw = base64.b64decode(secret, validate=True)
    except ValueError:
        raw = b""
    if len(raw) >= 16:  # an Azure account key: 64 random bytes, base64
        forms.add(raw)
    return sorted(forms)


def leaks(data: bytes, secrets: list[str]) -> list[str]:
    """Which secrets appear in ``data``, in any of their encodings."""
    return [s for s in secrets if any(form in data for form in encodings(s))]


@dataclass
class Scene:
    """One store's config, the secrets in play, and everything the processes wrote or printed."""

    kind: str
    bucket: Bucket
    sandbox_url: str
    tmp: Path
    secrets: list[str]
    secret_file: Path
    port: int = field(default_factory=free_port)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.tmp / "lakeexportd.yaml"

    def write(self, *, source: str = "file", root: str | None = None,
              endpoint: str | None = None) -> None:
        """A config whose secret is read from the secret file (``source="file"``) or from
        $LAKE_SECRET (``"env"``); ``root`` and ``endpoint`` replace the real ones."""
        secret_key = "secret_access_key" if self.kind == "s3" else "account_key"
        secret = (f"{secret_key}_file: '{self.secret_file}'" if source == "file"
                  else f"{secret_key}_env: LAKE_SECRET")
        endpoint = endpoint or self.bucket.config["endpoint"]
        if self.kind == "s3":
            options = (f"endpoint: '{endpoint}', region: '{self.bucket.config['region']}', "
                       "access_key_id_env: LAKE_KEY_ID")
        else:
            options = f"endpoint: '{endpoint}', account_name: '{self.bucket.config['account_name']}'"
        self.config.write_text(
            f"ksqldb: {{url: '{self.sandbox_url}', connect_timeout: 2s, max_retries: 1}}\n"
            f"lake:\n  root: {root or self.bucket.url + '/lake'}\n"
            f"  storage: {{{options}, allow_http: true, {secret}}}\n"
            f"logging: {{dir: '{self.tmp / 'logs'}'}}\n"
            "scheduler: {workers: 2, stop_grace: 5s}\n"
            "defaults: {schedule: {every: 1s}, settle_delay: 1s}\n"
            f"metrics: {{listen: '127.0.0.1:{self.port}'}}\n"
            "feeds:\n"
            "  - {name: tx, source: TRANSACTION_FLATTENED, kind: stream}\n"
            "  - {name: users, source: USER_SUMMARY, kind: table}\n"
        )

    def env(self, secret: str) -> dict[str, str]:
        return {**os.environ, "LAKE_SECRET": secret, "LAKE_KEY_ID": S3_KEY_ID}

    def cli(self, label: str, secret: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "lakeexportd", *args, "-c", str(self.config)],
                              env=self.env(secret), capture_output=True, text=True, timeout=120)
        self.outputs[label] = done.stdout + done.stderr
        return done

    def daemon(self, secret: str) -> DaemonProcess:
        return DaemonProcess(self.config, self.port, self.env(secret))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=43, preload=600, preload_days=2) as sb:
        yield sb


def _good_secret(kind: str, bucket: Bucket) -> str:
    return S3_SECRET if kind == "s3" else str(bucket.config["account_key"])


def _scene(kind: str, bucket: Bucket, sandbox: Sandbox, tmp_path: Path) -> Scene:
    secret = _good_secret(kind, bucket)
    secret_file = tmp_path / "secret" / "lake.key"
    secret_file.parent.mkdir()
    secret_file.write_text(secret + "\n")
    secrets = [secret, S3_KEY_ID] if kind == "s3" else [secret, AZURE_WRONG_KEY]
    return Scene(kind, bucket, sandbox.url, tmp_path, secrets, secret_file)


def _run_daemon_through_a_reload(scene: Scene, secret: str) -> None:
    """Exports with the secret from a file, SIGHUP onto the secret from the environment,
    exports again; /metrics and /status are kept."""
    scene.write(source="file")
    daemon = scene.daemon(secret)
    try:
        daemon.wait_ready(timeout=60)
        daemon.wait_runs("tx", 1, timeout=60)
        daemon.wait_runs("users", 1, timeout=60)
        scene.write(source="env")
        daemon.send(signal.SIGHUP)
        wait_for(lambda: any(e.get("event") == "config.reloaded" for e in daemon.events()), 30,
                 "config.reloaded after SIGHUP")
        before = daemon.runs("tx")
        wait_for(lambda: daemon.runs("tx") >= before + 2, 60, "two runs of tx after the reload")
        scene.outputs["metrics"] = daemon.get("/metrics").text
        scene.outputs["status"] = daemon.get("/status").text
        scene.outputs["healthz"] = daemon.get("/healthz").text
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
        scene.outputs["daemon stderr"] = daemon.stderr


def _s3_refusals(scene: Scene) -> None:
    """moto checks no credentials: a bucket that does not exist, and an endpoint where nothing
    listens, on a daemon reload and on the CLI."""
    missing = f"s3://missing-{scene.bucket.name}/lake"
    scene.write(source="env")
    daemon = scene.daemon(S3_SECRET)
    try:
        daemon.wait_ready(timeout=60)
        scene.write(source="env", root=missing)
        daemon.send(signal.SIGHUP)
        wait_for(lambda: any(e.get("event") == "config.reload_failed" for e in daemon.events()),
                 30, "config.reload_failed for the missing bucket")
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
        scene.outputs["daemon stderr (missing bucket reload)"] = daemon.stderr
    assert "missing-" in scene.outputs["daemon stderr (missing bucket reload)"]
    scene.write(source="file", root=missing)
    assert scene.cli("check-store missing bucket", S3_SECRET, "check-store").returncode != 0
    assert scene.cli("export missing bucket", S3_SECRET, "export", "--all").returncode != 0
    scene.write(source="env", endpoint=f"http://127.0.0.1:{free_port()}")
    done = scene.cli("export dead endpoint", S3_SECRET, "export", "--all")
    # Refused, naming the store. (Today that is a traceback with exit 1 rather than exit 75:
    # the feed registry's listing lets the store's OSError through; reported, not fixed here.)
    assert done.returncode != 0 and scene.bucket.url in done.stderr, done.stderr
    unstarted = scene.daemon(S3_SECRET)
    assert unstarted.proc.wait(60) != 0
    scene.outputs["daemon stderr (dead endpoint)"] = unstarted.stderr


def _azure_refusals(scene: Scene) -> None:
    """Azurite checks SharedKey signatures: a wrong account key is refused (403) at the
    daemon's start, by the CLI, and after a SIGHUP that reads a changed key file."""
    scene.write(source="env")
    refused = scene.daemon(AZURE_WRONG_KEY)
    assert refused.proc.wait(60) != 0
    scene.outputs["daemon stderr (wrong key at start)"] = refused.stderr
    assert "az://" in refused.stderr
    for label, args in (("export wrong key", ["export", "--all"]),
                        ("check-store wrong key", ["check-store"])):
        assert scene.cli(label, AZURE_WRONG_KEY, *args).returncode != 0, label
    scene.cli("status wrong key", AZURE_WRONG_KEY, "status")  # refused or not: it is searched
    assert "403" in scene.outputs["export wrong key"] or "refuse" in scene.outputs["export wrong key"]
    scene.write(source="file")
    daemon = scene.daemon("")
    try:
        daemon.wait_ready(timeout=60)
        scene.secret_file.write_text(AZURE_WRONG_KEY + "\n")
        daemon.send(signal.SIGHUP)
        wait_for(lambda: [e for e in daemon.events()
                          if e.get("event") in ("config.reload_failed", "export.failed")],
                 60, "a reload or run refused with the wrong key")
        scene.outputs["metrics (wrong key)"] = daemon.get("/metrics").text
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
        scene.outputs["daemon stderr (wrong key file)"] = daemon.stderr
        scene.secret_file.write_text(scene.secrets[0] + "\n")


def _everything_written(scene: Scene) -> dict[str, bytes]:
    """Every file under the test's folder but the secret file and the config (which names the
    variable and the file, not the value), and every object in the bucket or container."""
    written = {f"file {p}": p.read_bytes() for p in scene.tmp.rglob("*")
               if p.is_file() and p != scene.secret_file and p != scene.config}
    for batch in obstore.list(scene.bucket.store):
        for meta in batch:
            written[f"object {meta['path']}"] = bytes(obstore.get(scene.bucket.store,
                                                                  meta["path"]).bytes())
    written.update({f"output {k}": v.encode() for k, v in scene.outputs.items()})
    return written


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_no_secret_in_anything_the_daemon_and_cli_write(
    kind: str, sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    """Exports, a SIGHUP, metrics, status, the CLI and refused credentials or buckets: no
    secret in any log, object, metric, status page or output, in any of its encodings."""
    bucket: Bucket = request.getfixturevalue("s3_bucket" if kind == "s3" else "azure_container")
    scene = _scene(kind, bucket, sandbox, tmp_path)
    secret = scene.secrets[0]
    _run_daemon_through_a_reload(scene, secret)
    scene.write(source="env")
    for label, args in (("status", ["status", "--json"]), ("metadata", ["metadata", "list", "--json"]),
                        ("files", ["files", "tx", "--json"]), ("verify", ["verify"]),
                        ("check-store", ["check-store"])):
        done = scene.cli(label, secret, *args)
        assert done.returncode == 0, (label, done.stdout, done.stderr)
    if kind == "s3":
        _s3_refusals(scene)
    else:
        _azure_refusals(scene)

    written = _everything_written(scene)
    names = list(written)
    assert any("_lease.json" in n for n in names) and any("_metadata.json" in n for n in names)
    assert any(n.endswith(".parquet") for n in names) and any(n.endswith(".log") for n in names)
    assert json.loads(scene.outputs["status"])  # the daemon's /status page was read
    leaked = {name: found for name, data in written.items() if (found := leaks(data, scene.secrets))}
    assert not leaked, f"secrets found in: {sorted(leaked)}"


def test_the_search_finds_each_planted_encoding(tmp_path: Path, s3_bucket: Bucket) -> None:
    """The search above can fail: each encoding of a secret, planted in a file, an object or
    an output, is found (an Azure key's decoded bytes in a Parquet-like binary too)."""
    azure_key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    for secret in (S3_SECRET, azure_key):
        assert len(encodings(secret)) >= 3  # as written, URL-encoded, base64 (+ raw key bytes)
        for i, form in enumerate(encodings(secret)):
            scene = Scene("s3", s3_bucket, "http://127.0.0.1:1", tmp_path / f"{len(secret)}-{i}",
                          [secret], tmp_path / "none")
            scene.tmp.mkdir()
            assert not leaks(b"".join(_everything_written(scene).values()), [secret])
            for where in ("file", "object", "output"):
                if where == "file":
                    (scene.tmp / "logs.log").write_bytes(b"PAR1\x00" + form + b"\x00")
                elif where == "object":
                    obstore.put(s3_bucket.store, f"planted/{len(secret)}-{i}", b"x" + form)
                elif form.isascii():  # outputs are text: the raw key bytes go in files only
                    scene.outputs["cli"] = "error: " + form.decode()
                else:
                    continue
                assert leaks(b"".join(_everything_written(scene).values()), [secret]) == [secret]
                (scene.tmp / "logs.log").unlink(missing_ok=True)
                obstore.delete(s3_bucket.store, f"planted/{len(secret)}-{i}")
                scene.outputs.clear()
