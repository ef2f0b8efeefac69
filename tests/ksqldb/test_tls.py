"""TLS to ksqlDB: verification on by default, a CA bundle, mutual TLS with a client certificate."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakeexportd.config.model import KsqlDBSettings, Secret, TLSSettings
from lakeexportd.errors import KsqlDBTLSError, KsqlDBUnavailable
from lakeexportd.ksqldb.client import KsqlDBClient, client_from_settings
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.sandbox import Sandbox
from lakeexportd.sandbox.server import TLSFiles


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        extra = ["-extfile", "san.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", *extra, cwd=d)
    return d


@pytest.fixture(scope="module")
def https(pki: Path) -> Iterator[Sandbox]:
    with Sandbox.start(seed=2, preload=50, tls=TLSFiles(str(pki / "server.pem"), str(pki / "server.key"))) as sb:
        yield sb


def client(url: str, **tls: object) -> KsqlDBClient:
    return KsqlDBClient(CurlTransport(url, **tls), api="query-stream", max_retries=0)  # type: ignore[arg-type]


def test_https_with_the_ca_bundle_works(https: Sandbox, pki: Path) -> None:
    """With ksqldb.tls.ca_file naming the CA, queries run over verified TLS."""
    assert https.url.startswith("https://")
    c = client(https.url, ca_file=str(pki / "ca.pem"))
    try:
        with c.query("SELECT * FROM PAYMENT_TOTALS;") as result:
            assert sum(b.num_rows for b in result.batches()) > 0
    finally:
        c.close()


def test_verification_is_on_by_default(https: Sandbox) -> None:
    """Without the CA the server's certificate is refused: a configuration error with a hint."""
    c = client(https.url)
    try:
        with pytest.raises(KsqlDBTLSError, match="certificate.*ksqldb.tls.ca_file") as info:
            c.info()
        assert info.value.exit_code == 78
    finally:
        c.close()


def test_verification_can_be_turned_off(https: Sandbox) -> None:
    """tls.verify: false accepts the certificate (for test setups only)."""
    c = client(https.url, verify=False)
    try:
        assert c.info().version
    finally:
        c.close()


def test_mutual_tls_needs_the_client_certificate(pki: Path) -> None:
    """A server that requires client certificates accepts ours and refuses a client without one."""
    files = TLSFiles(str(pki / "server.pem"), str(pki / "server.key"), client_ca=str(pki / "ca.pem"))
    with Sandbox.start(seed=2, preload=10, tls=files) as sb:
        good = client(sb.url, ca_file=str(pki / "ca.pem"), cert_file=str(pki / "client.pem"),
                      key_file=str(pki / "client.key"))
        bad = client(sb.url, ca_file=str(pki / "ca.pem"))
        try:
            assert good.info().version
            # TLS 1.2 fails the handshake; TLS 1.3 lets it finish and the server hangs up.
            with pytest.raises((KsqlDBTLSError, KsqlDBUnavailable), match="cert_file"):
                bad.info()
        finally:
            good.close()
            bad.close()


@pytest.mark.parametrize(("http2", "version"), [(False, "HTTP/1.1"), (True, "HTTP/2")])
def test_http_version_over_tls_is_negotiated_with_alpn(https: Sandbox, pki: Path, http2: bool,
                                                       version: str) -> None:
    """Over https, http2: true negotiates HTTP/2 by ALPN; otherwise HTTP/1.1."""
    c = client(https.url, ca_file=str(pki / "ca.pem"), http2=http2)
    try:
        with c.query("SELECT * FROM TRANSACTION_FLATTENED LIMIT 5;") as result:
            assert result.http_version == version
            assert sum(b.num_rows for b in result.batches()) == 5
    finally:
        c.close()


def test_settings_build_the_curl_transport_with_tls_and_auth(https: Sandbox, pki: Path) -> None:
    """client_from_settings (daemon and CLI) carries rows over libcurl with the TLS settings."""
    settings = KsqlDBSettings(url=https.url, username="u", password=Secret("pw-not-shown"),
                              http2=True, tls=TLSSettings(ca_file=pki / "ca.pem"))
    c = client_from_settings(settings)
    try:
        assert isinstance(c.transport, CurlTransport) and "pw-not-shown" not in repr(c.transport)
        with c.query("SELECT * FROM PAYMENT_TOTALS;") as result:  # the sandbox has no auth here
            assert result.http_version == "HTTP/2" and result.schema.names
    finally:
        c.close()
