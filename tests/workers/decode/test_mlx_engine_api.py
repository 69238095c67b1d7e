"""The decode worker on the MLX engine, through its HTTP API: everything the torch engine serves, the same.

A real torch prefill worker (gRPC on loopback) streams each prompt's KV into the MLX engine's slots;
a torch decode worker answers the same requests locally as the reference.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from decode_servers import start_server, stop_server, wait_for
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.metrics import sample_value
from hybrid_workers.prefill.config import PrefillServerConfig
from hybrid_workers.prefill.server import start_server as start_prefill

pytest.importorskip("mlx.core", reason="the MLX engine needs the [mlx] extra (mlx, mlx-lm)")

LONG = "Prefill is compute bound and decode is bandwidth bound, so each goes where it runs best. " * 3
SHORT = "Hello there"
SAMPLED = {"temperature": 0.8, "top_p": 0.9, "top_k": 50, "seed": 7}


def metric(name: str, **labels: str) -> float:
    return sample_value("hybrid_inference_" + name, labels)


@pytest.fixture(scope="module")
def servers(tiny_lm: Any, tiny_mlx: Any, prefill_lm: Any) -> Iterator[dict[str, Any]]:
    """`mlx`: MLX decode worker with a remote prefill peer; `torch`: torch decode worker, local only."""
    prefill = start_prefill(prefill_lm, PrefillServerConfig(host="127.0.0.1", port=0))
    target = f"127.0.0.1:{prefill.port}"
    peer = PrefillClient(target, tiny_mlx, timeout_s=30.0)
    started = {
        "mlx": start_server(tiny_mlx, peer, prefill=target, remote_prefill_min_tokens=8),
        "torch": start_server(tiny_lm),
    }
    yield {name: running for name, (running, _) in started.items()}
    for running, thread in started.values():
        stop_server(running, thread)
    peer.close()
    prefill.stop(0)


def post(server: Any, path: str, **body: Any) -> dict[str, Any]:
    with server.client() as client:
        reply = client.post(path, json={"model": server.name, **body})
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("prompt", [LONG, SHORT], ids=["remote-prefill", "local-prefill"])
@pytest.mark.parametrize("sampling", [{"temperature": 0}, SAMPLED], ids=["greedy", "seeded"])
def test_completions_equal_the_torch_engine(servers: dict[str, Any], prompt: str, sampling: dict) -> None:
    body = {"prompt": prompt, "max_tokens": 16, "logprobs": 2, **sampling}
    want = post(servers["torch"], "/v1/completions", **body)
    got = post(servers["mlx"], "/v1/completions", **body)
    assert got["choices"][0]["text"] == want["choices"][0]["text"]
    assert got["choices"][0]["finish_reason"] == want["choices"][0]["finish_reason"]
    assert got["usage"] == want["usage"]
    got_lp, want_lp = got["choices"][0]["logprobs"], want["choices"][0]["logprobs"]
    assert got_lp["tokens"] == want_lp["tokens"]
    assert got_lp["token_logprobs"] == pytest.approx(want_lp["token_logprobs"], abs=1e-3)
    assert [list(top) for top in got_lp["top_logprobs"]] == [list(top) for top in want_lp["top_logprobs"]]


def test_remote_prefill_lands_in_the_mlx_engine(servers: dict[str, Any], tiny_mlx: Any) -> None:
    name = servers["mlx"].name
    before = metric("kv_transfer_bytes_total", model=name)
    remote_before = metric("prompt_tokens_total", model=name, prefill="remote")
    post(servers["mlx"], "/v1/completions", prompt=LONG, max_tokens=4, temperature=0)
    prompt_tokens = len(tiny_mlx.tokenizer.encode(LONG))
    layer_bytes = 2 * tiny_mlx.num_kv_heads * prompt_tokens * tiny_mlx.head_dim * 4  # keys + values, float32
    assert metric("kv_transfer_bytes_total", model=name) - before == tiny_mlx.num_layers * layer_bytes
    assert metric("prompt_tokens_total", model=name, prefill="remote") - remote_before == prompt_tokens


def test_stop_strings_echo_and_chat_streaming_match(servers: dict[str, Any]) -> None:
    torch_server, mlx_server = servers["torch"], servers["mlx"]
    base = post(torch_server, "/v1/completions", prompt=LONG, max_tokens=12, temperature=0)["choices"][0][
        "text"
    ]
    stop = base.strip().split()[1] if len(base.split()) > 2 else base[2:4]
    for server_body in ({"stop": [stop]}, {"echo": True, "logprobs": 3, "max_tokens": 3}):
        body = {"prompt": LONG, "max_tokens": 12, "temperature": 0, **server_body}
        want = post(torch_server, "/v1/completions", **body)["choices"][0]
        got = post(mlx_server, "/v1/completions", **body)["choices"][0]
        assert got["text"] == want["text"]
        assert got["finish_reason"] == want["finish_reason"]
        if "echo" in server_body:
            assert got["logprobs"]["tokens"] == want["logprobs"]["tokens"]
            want_lp = want["logprobs"]["token_logprobs"][1:]
            assert got["logprobs"]["token_logprobs"][1:] == pytest.approx(want_lp, abs=1e-3)
    messages = [{"role": "user", "content": "Tell me about the cache"}]
    chat = {"messages": messages, "max_tokens": 10, "temperature": 0}
    whole = post(mlx_server, "/v1/chat/completions", **chat)["choices"][0]["message"]["content"]
    assert whole == post(torch_server, "/v1/chat/completions", **chat)["choices"][0]["message"]["content"]
    assert streamed_chat(mlx_server, chat) == whole


def streamed_chat(server: Any, body: dict[str, Any]) -> str:
    text = ""
    with (
        server.client() as client,
        client.stream(
            "POST", "/v1/chat/completions", json={"model": server.name, "stream": True, **body}
        ) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:])["choices"]
                text += choices[0]["delta"].get("content", "") if choices else ""
    return text


def test_a_client_leaving_mid_stream_cancels_and_frees_the_slot(servers: dict[str, Any]) -> None:
    server = servers["mlx"]
    cancelled = metric("requests_total", model=server.name, outcome="cancelled")
    body = {"model": server.name, "prompt": LONG, "max_tokens": 300, "temperature": 0, "stream": True}
    with server.client() as client, client.stream("POST", "/v1/completions", json=body) as response:
        for count, _line in enumerate(response.iter_lines()):
            if count == 3:
                break  # leaving the block closes the connection mid-stream
    wait_for(
        lambda: metric("requests_total", model=server.name, outcome="cancelled") == cancelled + 1, "cancel"
    )
    wait_for(lambda: metric("requests_running", model=server.name) == 0, "the slot to be freed")
    assert (
        post(server, "/v1/completions", prompt=SHORT, max_tokens=3, temperature=0)["usage"][
            "completion_tokens"
        ]
        == 3
    )


def test_an_unreachable_prefill_worker_falls_back_to_an_mlx_prefill(
    servers: dict[str, Any], tiny_mlx: Any
) -> None:
    from support.loopback import free_port

    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    peer = PrefillClient(target, tiny_mlx, timeout_s=5.0)
    running, thread = start_server(tiny_mlx, peer, prefill=target, remote_prefill_min_tokens=8)
    try:
        body = {"prompt": LONG, "max_tokens": 8, "temperature": 0}
        got = post(running, "/v1/completions", **body)["choices"][0]["text"]
        assert got == post(servers["torch"], "/v1/completions", **body)["choices"][0]["text"]
        # the breaker may learn of the dead peer before the request (peer_down) or from it (unreachable)
        reasons = ("unreachable", "peer_down")
        assert sum(metric("prefill_fallback_total", model=running.name, reason=r) for r in reasons) == 1
    finally:
        stop_server(running, thread)
        peer.close()
