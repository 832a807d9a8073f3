"""How every Kafka client connects: plaintext, TLS (a CA file, a client certificate) and SASL (PLAIN, SCRAM).

Read once from the KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* settings (shared/config.py) into
FastStream's security object, which the services' broker takes as it is and which gives the keyword arguments of
every plain aiokafka client (the outbox relay's producer, dead letters, topic creation, lag probes, backups):
one meaning, whichever client connects.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from shared.config import Settings, get_settings

_SASL = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}


class KafkaTlsFileMissing(ValueError):
    """A KAFKA_SSL_* file cannot be read: said at once, not as a failed handshake later."""


def _readable(variable: str, path: str) -> str:
    if not Path(path).is_file():
        raise KafkaTlsFileMissing(f"{variable}={path}: no such file")
    return path


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext:
    """A context that verifies the brokers' certificates and names: against KAFKA_SSL_CA_FILE when set, else the
    system's trusted authorities (a managed service with a public certificate); with the client certificate
    when the brokers ask for one."""
    cafile = _readable("KAFKA_SSL_CA_FILE", settings.kafka_ssl_ca_file) if settings.kafka_ssl_ca_file else None
    context = ssl.create_default_context(cafile=cafile)
    if settings.kafka_ssl_cert_file:
        context.load_cert_chain(
            _readable("KAFKA_SSL_CERT_FILE", settings.kafka_ssl_cert_file),
            _readable("KAFKA_SSL_KEY_FILE", settings.kafka_ssl_key_file),
        )
    return context


def kafka_security(settings: Settings | None = None) -> BaseSecurity | None:
    """FastStream's security for the configured protocol (None: plaintext, no credentials)."""
    settings = settings or get_settings()
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    sasl = _SASL[settings.kafka_sasl_mechanism]
    return sasl(
        settings.kafka_sasl_username, settings.kafka_sasl_password, ssl_context=context, use_ssl=context is not None
    )


def kafka_client_options(settings: Settings | None = None) -> dict[str, Any]:
    """The keyword arguments an aiokafka producer, consumer or admin client needs to connect as configured."""
    return parse_security(kafka_security(settings))
