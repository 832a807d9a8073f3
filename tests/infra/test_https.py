"""HTTPS at the gateway (docs/operations.md, "HTTPS"): a certificate and key from files, plain HTTP redirected,
ACME's http-01 challenges answered, HSTS sent. A second gateway is rendered by the launcher's own code with a
certificate made here (signed by a CA made here) and started beside the suite's, in front of the same services."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deploy.local.gateway import Tls, nginx_binary, render_nginx_conf
from deploy.local.probes import free_port, wait_http


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for localhost and 127.0.0.1 it signed: (ca.pem, chain.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("Groundswell test CA")).issuer_name(_name("Groundswell test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, chain_file, key_file = directory / "ca.pem", directory / "chain.pem", directory / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_file.chmod(0o600)
    return ca_file, chain_file, key_file


class HttpsGateway:
    def __init__(self, http_port: int, https_port: int, ca_file: Path, webroot: Path) -> None:
        self.http = f"http://127.0.0.1:{http_port}"
        self.https = f"https://localhost:{https_port}"
        self.ca_file = ca_file
        self.verify = ssl.create_default_context(cafile=str(ca_file))
        self.webroot = webroot


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[HttpsGateway]:
    directory = tmp_path_factory.mktemp("https-gateway")
    (directory / "tmp").mkdir()
    webroot = directory / "acme"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    ca_file, chain_file, key_file = make_certificates(directory)
    http_port, https_port = free_port(), free_port()
    tls = Tls(str(chain_file), str(key_file), https_port, f"https://localhost:{https_port}", str(webroot))
    conf = directory / "nginx.conf"
    conf.write_text(render_nginx_conf("local", tls=tls, directory=directory, port=http_port))
    command = [nginx_binary(), "-p", str(directory), "-c", str(conf), "-e", "stderr"]
    checked = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen([*command, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_http(f"http://127.0.0.1:{http_port}/_gateway/healthz", 15), "the HTTPS gateway did not start"
        yield HttpsGateway(http_port, https_port, ca_file, webroot)
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_the_site_is_served_over_https_with_a_certificate_from_files_and_hsts(gateway):
    with httpx.Client(verify=gateway.verify, timeout=30) as client:
        home = client.get(f"{gateway.https}/")
        join = client.get(f"{gateway.https}/join")
    assert home.status_code == 200 and "<html" in home.text.lower()
    assert join.status_code == 200
    assert home.headers["strict-transport-security"].startswith("max-age=31536000")
    assert "frame-ancestors 'none'" in home.headers["content-security-policy"]


def test_a_client_that_does_not_trust_the_certificate_is_refused(gateway):
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{gateway.https}/", verify=ssl.create_default_context(), timeout=10)


def test_plain_http_is_redirected_to_the_same_path_on_https(gateway):
    answer = httpx.get(f"{gateway.http}/join?level=active", timeout=10)
    assert answer.status_code == 308
    assert answer.headers["location"] == f"{gateway.https}/join?level=active"
    posted = httpx.post(f"{gateway.http}/join", data={"email": "x@example.org"}, timeout=10)
    assert posted.status_code == 308, "a POST is redirected with its method kept, never answered over plain HTTP"


def test_acme_http_01_challenges_are_answered_over_plain_http(gateway):
    (gateway.webroot / ".well-known" / "acme-challenge" / "token-abc").write_text("token-abc.thumbprint")
    answer = httpx.get(f"{gateway.http}/.well-known/acme-challenge/token-abc", timeout=10)
    assert answer.status_code == 200 and answer.text == "token-abc.thumbprint"


def test_the_gateway_health_check_answers_on_both_ports(gateway):
    assert httpx.get(f"{gateway.http}/_gateway/healthz", timeout=10).text.startswith("ok ")
    assert httpx.get(f"{gateway.https}/_gateway/healthz", verify=gateway.verify, timeout=10).text.startswith("ok ")
