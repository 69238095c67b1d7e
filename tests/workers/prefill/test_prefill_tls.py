"""TLS and mTLS on the KV channel, with certificates generated here: the wrong client is refused."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.engine import SamplingParams
from hybrid_workers.errors import UserError
from hybrid_workers.kv.data_frame import hello
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.tls import TLSConfig
from hybrid_workers.prefill.config import PrefillServerConfig
from hybrid_workers.prefill.server import start_server
from kv_transfer_helpers import assert_matches_generate, prompt

GREEDY = SamplingParams(max_tokens=8, temperature=0)
Key = ec.EllipticCurvePrivateKey


def _certificate(
    name: str, key: Key, issuer: tuple[x509.Name, Key] | None, server: bool = False
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: Key) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path.write_bytes(key_bytes)
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server and a client certificate signed by it, and a client certificate from another CA."""
    directory = tmp_path_factory.mktemp("pki")
    paths: dict[str, Path] = {}
    for ca_name in ("ca", "rogue-ca"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _certificate(ca_name, ca_key, None)
        paths[ca_name], _ = _write(directory, ca_name, ca_cert, ca_key)
        issued = ["server", "client"] if ca_name == "ca" else ["rogue-client"]
        for name in issued:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _certificate(name, key, (ca_cert.subject, ca_key), server=name == "server")
            paths[f"{name}.crt"], paths[f"{name}.key"] = _write(directory, name, cert, key)
    return paths


@pytest.fixture(scope="module")
def mtls_server(tiny_lm, pki) -> Iterator:
    tls = TLSConfig(cert=pki["server.crt"], key=pki["server.key"], ca=pki["ca"])
    running = start_server(tiny_lm, PrefillServerConfig(host="127.0.0.1", port=0, tls=tls))
    yield running
    running.stop(grace_s=0)


def test_mtls_client_with_the_right_certificate_gets_an_exact_kv_transfer(tiny_lm, pki, mtls_server) -> None:
    tls = TLSConfig(cert=pki["client.crt"], key=pki["client.key"], ca=pki["ca"])
    ids = prompt(40, seed=5)
    with PrefillClient(f"127.0.0.1:{mtls_server.port}", tiny_lm, tls=tls) as client:
        remote = client.prefill(ids, GREEDY)
    assert remote.timings.transport == "tcp"  # the layers came over the data connection, with mTLS
    assert_matches_generate(tiny_lm, remote, ids)


@pytest.mark.parametrize("client_cert", [None, "rogue-client"])
def test_the_mtls_data_port_refuses_plaintext_and_foreign_certificates(pki, mtls_server, client_cert) -> None:
    raw = socket.create_connection(("127.0.0.1", mtls_server.data_port), timeout=10)
    try:
        if client_cert is None:
            raw.sendall(hello(bytes(16)))  # plaintext: the server expects a TLS ClientHello
            with contextlib.suppress(ConnectionResetError):
                assert raw.recv(1) == b""  # closed without a byte
            return
        context = ssl.create_default_context(cafile=pki["ca"])
        context.load_cert_chain(pki[f"{client_cert}.crt"], pki[f"{client_cert}.key"])
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            raw = context.wrap_socket(raw, server_hostname="127.0.0.1")
            raw.sendall(hello(bytes(16)))
            raw.recv(1)
    finally:
        raw.close()


@pytest.mark.parametrize(
    "client_files",
    [
        pytest.param({"ca": "ca"}, id="no client certificate"),
        pytest.param({"cert": "rogue-client.crt", "key": "rogue-client.key", "ca": "ca"}, id="another CA's"),
        pytest.param(None, id="plaintext"),
    ],
)
def test_mtls_refuses_a_client_without_the_right_certificate(tiny_lm, pki, mtls_server, client_files) -> None:
    tls = None if client_files is None else TLSConfig(**{k: pki[v] for k, v in client_files.items()})
    with (
        PrefillClient(f"127.0.0.1:{mtls_server.port}", tiny_lm, tls=tls, timeout_s=10) as client,
        pytest.raises(KVProtocolError) as caught,
    ):
        client.prefill(prompt(10), GREEDY)
    assert caught.value.reason is Reason.TRANSPORT


def test_tls_without_client_ca_serves_any_client_that_trusts_it(tiny_lm, pki) -> None:
    tls = TLSConfig(cert=pki["server.crt"], key=pki["server.key"])
    running = start_server(tiny_lm, PrefillServerConfig(host="127.0.0.1", port=0, tls=tls))
    try:
        with PrefillClient(f"localhost:{running.port}", tiny_lm, tls=TLSConfig(ca=pki["ca"])) as client:
            remote = client.prefill(prompt(10), GREEDY)
            assert remote.cache.get_seq_length() == 10 and remote.timings.transport == "tcp"
        rogue = TLSConfig(ca=pki["rogue-ca"])
        with (
            PrefillClient(f"localhost:{running.port}", tiny_lm, tls=rogue) as client,
            pytest.raises(KVProtocolError),
        ):
            client.prefill(prompt(10), GREEDY)
    finally:
        running.stop(grace_s=0)


def test_tls_flags_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--tls-cert and --tls-key"):
        TLSConfig(cert=tmp_path / "a.crt")
    with pytest.raises(UserError, match=r"--tls-ca .*missing\.pem: no such file"):
        TLSConfig(ca=tmp_path / "missing.pem")
