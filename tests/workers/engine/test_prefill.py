"""prefill(): per-layer K/V emission happens layer by layer, during the forward, with the cached tensors."""

from __future__ import annotations

import threading

import pytest
import torch
from hybrid_workers.engine import prefill
from hybrid_workers.errors import UserError

PROMPT = [1, 40, 41, 300, 7, 900, 512, 3, 88, 89, 90]


def test_on_layer_is_called_once_per_layer_in_order(tiny_lm):
    calls: list[int] = []
    prefill(tiny_lm, PROMPT, lambda index, keys, values: calls.append(index))
    assert calls == list(range(tiny_lm.num_layers))


def test_on_layer_runs_before_the_next_layer_starts(tiny_lm):
    """A pre-hook counts started layers; inside on_layer(i) exactly i+1 layers may have started."""
    started: list[int] = []
    seen: dict[int, int] = {}
    layers = tiny_lm.model.model.layers
    handles = [
        layer.register_forward_pre_hook(lambda _m, _a, i=i: started.append(i))
        for i, layer in enumerate(layers)
    ]
    try:
        prefill(tiny_lm, PROMPT, lambda index, keys, values: seen.__setitem__(index, len(started)))
    finally:
        for handle in handles:
            handle.remove()
    assert seen == {i: i + 1 for i in range(tiny_lm.num_layers)}


def test_emitted_keys_values_equal_a_plain_forward_cache_bitwise(tiny_lm):
    emitted: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    prefill(tiny_lm, PROMPT, lambda i, k, v: emitted.__setitem__(i, (k.clone(), v.clone())))
    with torch.no_grad():
        plain = tiny_lm.model(input_ids=torch.tensor([PROMPT]), use_cache=True).cache
    for index in range(tiny_lm.num_layers):
        keys, values = emitted[index]
        assert keys.shape == (1, tiny_lm.num_kv_heads, len(PROMPT), tiny_lm.head_dim)
        assert torch.equal(keys, plain.layers[index].keys)
        assert torch.equal(values, plain.layers[index].values)


def test_logits_equal_the_plain_forward_last_position(tiny_lm):
    result = prefill(tiny_lm, PROMPT)
    with torch.no_grad():
        plain = tiny_lm.model(input_ids=torch.tensor([PROMPT])).logits[0, -1]
    assert result.logits.shape == (tiny_lm.vocab_size,)
    torch.testing.assert_close(result.logits, plain.float(), rtol=1e-5, atol=1e-5)
    assert result.cache.get_seq_length() == len(PROMPT)
    assert len(result.layer_seconds) == tiny_lm.num_layers
    assert all(seconds > 0 for seconds in result.layer_seconds)


def test_an_error_in_on_layer_aborts_and_the_next_prefill_is_unaffected(tiny_lm):
    def fail(index: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        raise RuntimeError(f"receiver gone at layer {index}")

    with pytest.raises(RuntimeError, match="layer 0"):
        prefill(tiny_lm, PROMPT, fail)
    calls: list[int] = []
    prefill(tiny_lm, PROMPT, lambda i, k, v: calls.append(i))
    assert calls == list(range(tiny_lm.num_layers))  # the failed run's watch is gone


def test_other_forwards_on_the_same_model_do_not_trigger_on_layer(tiny_lm):
    """The hooks fire only for this prefill's own cache (a concurrent forward passes through)."""
    calls: list[int] = []

    def nested(index: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        calls.append(index)
        if index == 0:
            with torch.no_grad():
                tiny_lm.model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True)

    prefill(tiny_lm, PROMPT, nested)
    assert calls == list(range(tiny_lm.num_layers))


@pytest.mark.parametrize(
    ("tokens", "message"),
    [([], "empty"), ([1, 5000], "5000"), ([1, -1], "-1"), (list(range(1, 600)), "exceed")],
)
def test_bad_token_ids_are_refused_with_the_value(tiny_lm, tokens, message):
    with pytest.raises(UserError, match=message):
        prefill(tiny_lm, tokens)


def test_concurrent_prefills_and_decode_forwards_each_get_their_own_layers(tiny_lm):
    """Threads prefill different prompts while another runs cached forwards on the same model.

    Hooks registered per prefill failed this about once in three runs of 60 rounds (a kwargs hook
    called without its kwargs in the background thread); 150 rounds make a regression show.
    """
    prompts = {n: [1, *range(10 + n, 30 + 3 * n)] for n in range(4)}
    expected = {n: prefill(tiny_lm, ids).cache for n, ids in prompts.items()}
    got: dict[int, list[tuple[int, torch.Tensor]]] = {n: [] for n in prompts}
    errors: list[BaseException] = []
    stop = threading.Event()

    def prefill_many(n: int) -> None:
        try:
            for _ in range(150):
                got[n].clear()
                prefill(tiny_lm, prompts[n], lambda i, k, v, n=n: got[n].append((i, k)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    def forwards() -> None:
        try:
            with torch.no_grad():
                while not stop.is_set():
                    tiny_lm.model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True)
        except BaseException as exc:  # reported below
            errors.append(exc)

    background = threading.Thread(target=forwards)
    background.start()
    workers = [threading.Thread(target=prefill_many, args=(n,)) for n in prompts]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    background.join()
    assert errors == []
    for n, layers in got.items():
        assert [i for i, _ in layers] == list(range(tiny_lm.num_layers))
        assert all(torch.equal(k, expected[n].layers[i].keys) for i, k in layers)
