"""Certificates made on the spot for the TLS tests: a CA the servers' certificates chain to, a client certificate
signed by it (for brokers that authenticate clients by TLS), and a second CA nobody's certificate chains to."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Pki:
    ca: Path  # the authority the servers' and the client's certificates chain to (PEM)
    untrusted_ca: Path  # an authority of the same name that signed none of them
    server_cert: Path
    server_key: Path
    server_keystore: Path  # key and certificate in one PEM file, as Kafka's PEM keystore reads it
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


def _authority(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    cert = (
        _builder(common_name, _name(common_name), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    common_name: str, usage: x509.ObjectIdentifier, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
    names: list[x509.GeneralName] | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    builder = (
        _builder(common_name, ca.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def make_pki(directory: Path) -> Pki:
    """Write a fresh CA, a server certificate for localhost and 127.0.0.1, a client certificate and an
    untrusted CA into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _authority("Groundswell test CA")
    _, untrusted = _authority("Groundswell test CA")  # same name, other key: only the signature tells them apart
    server_key, server = _leaf(
        "localhost", ExtendedKeyUsageOID.SERVER_AUTH, ca_key, ca,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))],
    )  # fmt: skip
    client_key, client = _leaf("groundswell-client", ExtendedKeyUsageOID.CLIENT_AUTH, ca_key, ca)
    pki = Pki(
        ca=directory / "ca.pem",
        untrusted_ca=directory / "untrusted-ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        server_keystore=directory / "server-keystore.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    files = {
        pki.ca: _pem(ca),
        pki.untrusted_ca: _pem(untrusted),
        pki.server_cert: _pem(server),
        pki.server_key: _key_pem(server_key),
        pki.server_keystore: _key_pem(server_key) + _pem(server),
        pki.client_cert: _pem(client),
        pki.client_key: _key_pem(client_key),
    }
    for path, content in files.items():
        path.write_bytes(content)
        path.chmod(0o600 if path.suffix == ".key" or path == pki.server_keystore else 0o644)
    return pki
