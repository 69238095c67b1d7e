"""TLS and mutual TLS for the KV channel, from PEM files (--tls-cert, --tls-key, --tls-ca on both sides).

Server: cert + key serve TLS; adding a CA requires every client to present a certificate signed by it
(mTLS). Client: the CA verifies the server; cert + key present a client certificate. Nothing given:
plaintext, the default for loopback.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from hybrid_workers.errors import UserError


@dataclass(frozen=True)
class TLSConfig:
    """PEM files for one end of the channel; validated on construction (files must be readable)."""

    cert: Path | None = None  # this end's certificate chain
    key: Path | None = None  # this end's private key
    ca: Path | None = None  # server: require client certs signed by it; client: trust it for the server

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise UserError("--tls-cert and --tls-key: give both, or neither")
        for flag, path in (("--tls-cert", self.cert), ("--tls-key", self.key), ("--tls-ca", self.ca)):
            if path is not None and not Path(path).is_file():
                raise UserError(f"{flag} {path}: no such file; give a PEM file")

    @classmethod
    def from_flags(cls, cert: str | None, key: str | None, ca: str | None) -> TLSConfig | None:
        """The config for these flag values, or None (plaintext) when all are empty."""
        if not (cert or key or ca):
            return None
        return cls(*(Path(value) if value else None for value in (cert, key, ca)))


def _read(path: Path | None) -> bytes | None:
    return Path(path).read_bytes() if path is not None else None


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    """Credentials for the prefill worker's port: TLS, or mTLS when a CA is given."""
    cert, key = _read(tls.cert), _read(tls.key)
    if cert is None or key is None:
        raise UserError("--tls-cert and --tls-key are needed to serve TLS (--tls-ca alone is not enough)")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=_read(tls.ca), require_client_auth=tls.ca is not None
    )


def channel_credentials(tls: TLSConfig) -> grpc.ChannelCredentials:
    """Credentials for the decode worker's channel (system roots when no CA is given)."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca), private_key=_read(tls.key), certificate_chain=_read(tls.cert)
    )


def server_context(tls: TLSConfig) -> ssl.SSLContext:
    """The data port's TLS context: the gRPC port's certificate, client certificates required with a CA."""
    if tls.cert is None or tls.key is None:
        raise UserError("--tls-cert and --tls-key are needed to serve TLS (--tls-ca alone is not enough)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    if tls.ca is not None:
        context.load_verify_locations(cafile=tls.ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(tls: TLSConfig) -> ssl.SSLContext:
    """The decode side's TLS context for the data connection: verifies the server like the channel does."""
    context = ssl.create_default_context(cafile=tls.ca)  # no CA given: the system roots
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert is not None and tls.key is not None:
        context.load_cert_chain(tls.cert, tls.key)
    return context
