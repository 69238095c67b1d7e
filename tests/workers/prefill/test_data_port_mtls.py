"""The KV data port requires mTLS exactly like the gRPC port when the worker has a CA (the link a decode
agent outside the cluster uses): a client certificate signed by the CA gets its connection claimed; a
TLS client without one, or plain TCP, never reaches a transfer."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from hybrid_workers.kv.data_frame import hello
from hybrid_workers.kv.tls import TLSConfig, client_context
from hybrid_workers.prefill.data_listener import DataListener
from support.pki import write_tls_dir

TRANSFER = bytes(range(16))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSConfig:
    folder = write_tls_dir(tmp_path_factory.mktemp("tls"))
    return TLSConfig(folder / "tls.crt", folder / "tls.key", folder / "ca.crt")


@pytest.fixture
def listener(tls: TLSConfig) -> Iterator[DataListener]:
    running = DataListener("127.0.0.1", 0, tls, hello_timeout_s=2.0)
    yield running
    running.close()


def _send_hello(port: int, context: ssl.SSLContext | None) -> None:
    """Connect, say hello for TRANSFER, and wait for the server to answer or close (a refused TLS 1.3
    client certificate is only reported after the client's handshake returns)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context is not None else raw
        try:
            sock.sendall(hello(TRANSFER))
            sock.recv(1)
        except (OSError, TimeoutError):  # ssl.SSLError is an OSError
            pass


def test_a_client_certificate_signed_by_the_ca_is_claimed(listener: DataListener, tls: TLSConfig) -> None:
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as raw:
        sock = client_context(tls).wrap_socket(raw, server_hostname="127.0.0.1")
        sock.sendall(hello(TRANSFER))
        claimed = listener.claim(TRANSFER, wait_s=10)
        assert claimed is not None
        claimed.close()  # a DataConnection: the socket and the hello's data version


def test_tls_without_a_client_certificate_is_refused(listener: DataListener, tls: TLSConfig) -> None:
    no_cert = client_context(TLSConfig(ca=Path(str(tls.ca))))  # trusts the server, presents nothing
    _send_hello(listener.port, no_cert)
    assert listener.claim(TRANSFER, wait_s=1.0) is None


def test_plain_tcp_is_refused(listener: DataListener) -> None:
    _send_hello(listener.port, None)
    assert listener.claim(TRANSFER, wait_s=1.0) is None
