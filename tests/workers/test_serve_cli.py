"""`serve`'s command lines for its workers: every flag it passes exists in the worker's own parser."""

from __future__ import annotations

import argparse

import pytest
from hybrid_workers.cli import build_parser
from hybrid_workers.serve_options import FORWARDED, Ports
from hybrid_workers.serve_session import client_host, decode_spec, prefill_spec

PORTS = Ports(api=18000, prefill=15051, prefill_metrics=19090)


def serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def worker_args(spec_argv: tuple[str, ...]) -> argparse.Namespace:
    """Parse a worker command line (`python -m hybrid_workers <role> ...`) with the real CLI parser."""
    assert spec_argv[1:3] == ("-m", "hybrid_workers")
    return build_parser().parse_args(list(spec_argv[3:]))


def test_workers_get_the_model_their_ports_and_loopback_prefill() -> None:
    args = serve_args("--port", "18000")
    prefill = worker_args(prefill_spec(args, "/m", PORTS).argv)
    decode = worker_args(decode_spec(args, "/m", PORTS).argv)
    assert (prefill.command, prefill.model, prefill.host, prefill.port) == (
        "prefill",
        "/m",
        "127.0.0.1",
        15051,
    )
    assert prefill.metrics_port == 19090
    assert (decode.command, decode.model, decode.port) == ("decode", "/m", 18000)
    assert decode.prefill == "127.0.0.1:15051"


def test_per_role_device_overrides_the_shared_one() -> None:
    args = serve_args("--device", "cpu", "--prefill-device", "cuda", "--dtype", "bfloat16")
    prefill = worker_args(prefill_spec(args, "/m", PORTS).argv)
    decode = worker_args(decode_spec(args, "/m", PORTS).argv)
    assert (str(prefill.device), str(decode.device)) == ("cuda", "cpu")
    assert str(prefill.dtype) == str(decode.dtype) == "bfloat16"


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--remote-prefill-min-tokens", "7"),
        ("--fallback", "fail"),
        ("--max-concurrency", "3"),
        ("--max-queue", "5"),
        ("--kv-compression", "int8"),
        ("--chunk-bytes", "1MiB"),
        ("--engine", "mlx"),
    ],
)
def test_each_pass_through_flag_reaches_its_worker_only(flag: str, value: str) -> None:
    assert flag in FORWARDED
    args = serve_args(flag, value)
    dest = flag.lstrip("-").replace("-", "_")
    for role, spec in (
        ("prefill", prefill_spec(args, "/m", PORTS)),
        ("decode", decode_spec(args, "/m", PORTS)),
    ):
        if role in FORWARDED[flag].roles:
            assert str(getattr(worker_args(spec.argv), dest)) == value
        else:
            assert flag not in spec.argv


@pytest.mark.parametrize(("argv", "name"), [((), "/m"), (("--served-model-name", "chat-8b"), "chat-8b")])
def test_both_workers_label_their_metrics_with_one_served_name(argv: tuple[str, ...], name: str) -> None:
    args = serve_args(*argv)
    prefill = worker_args(prefill_spec(args, "/m", PORTS).argv)
    decode = worker_args(decode_spec(args, "/m", PORTS).argv)
    assert prefill.served_model_name == decode.served_model_name == name


def test_extra_worker_arguments_are_passed_verbatim() -> None:
    args = serve_args("--decode-arg=--max-model-len=256", "--prefill-arg=--mode=bulk")
    assert worker_args(decode_spec(args, "/m", PORTS).argv).max_model_len == 256
    assert worker_args(prefill_spec(args, "/m", PORTS).argv).mode == "bulk"


def test_wildcard_hosts_are_reached_over_loopback() -> None:
    assert [client_host(h) for h in ("0.0.0.0", "::", "10.0.0.5", "fe80::1")] == [
        "127.0.0.1",
        "[::1]",
        "10.0.0.5",
        "[fe80::1]",
    ]


def test_workers_wait_passively_for_cores_unless_the_user_chose(monkeypatch) -> None:
    args = serve_args()
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    for spec in (prefill_spec(args, "/m", PORTS), decode_spec(args, "/m", PORTS)):
        assert spec.env["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert prefill_spec(args, "/m", PORTS).env["OMP_WAIT_POLICY"] == "ACTIVE"
