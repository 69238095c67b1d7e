"""Logprobs token names, bytes and text offsets: partial UTF-8 tokens, an added BOS, echo offsets."""

from __future__ import annotations

from typing import Any

import pytest
from hybrid_workers.decode.logprobs import TokenScore
from hybrid_workers.decode.requests import Endpoint
from hybrid_workers.decode.responses import ResponseShaper
from hybrid_workers.decode.token_texts import TokenTexts

TEXT = "héllo wörld ’x"  # é, ö and ’ are split over byte tokens by the tiny model's tokenizer


@pytest.fixture(scope="module")
def texts(tiny_lm: Any) -> TokenTexts:
    return TokenTexts(tiny_lm.tokenizer)


def partial_tokens(texts: TokenTexts, vocab: int) -> list[int]:
    """Ids of tokens holding part of a UTF-8 character (they decode to U+FFFD alone)."""
    return [i for i in range(vocab) if texts.label(i).startswith("bytes:")]


def test_byte_tokens_have_unique_names_and_their_own_bytes(texts: TokenTexts, tiny_lm: Any) -> None:
    partial = partial_tokens(texts, tiny_lm.vocab_size)
    assert len(partial) > 5
    for token_id in partial:
        assert tiny_lm.tokenizer.decode([token_id]) == "\ufffd"  # what the old names were
        raw = texts.token_bytes(token_id)
        assert texts.label(token_id) == "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
        assert raw != "\ufffd".encode()
    assert len({texts.token_bytes(i) for i in partial}) == len(partial)


def test_legacy_top_logprobs_hold_n_entries_when_several_are_byte_tokens(texts, tiny_lm) -> None:
    partial = partial_tokens(texts, tiny_lm.vocab_size)[:4]
    shaper = ResponseShaper(Endpoint.COMPLETIONS, "m", texts, top_logprobs=5)
    top = [(partial[0], -0.1), (partial[1], -0.2), (partial[2], -0.3), (partial[3], -0.4), (300, -0.5)]
    score = TokenScore(partial[0], -0.1, tuple(top))
    logprobs = shaper.logprobs([score], text="")
    assert len(logprobs["top_logprobs"][0]) == 5
    chat = ResponseShaper(Endpoint.CHAT, "m", texts, top_logprobs=2).logprobs([score])
    entry = chat["content"][0]
    assert entry["bytes"] == list(texts.token_bytes(partial[0])) and len(entry["bytes"]) == 1
    assert [alt["bytes"] for alt in entry["top_logprobs"]] == [
        list(texts.token_bytes(i)) for i in partial[:2]
    ]


def test_offsets_place_each_token_in_the_text_and_an_added_bos_takes_no_room(texts, tiny_lm) -> None:
    ids = tiny_lm.tokenizer(TEXT)["input_ids"]
    assert ids[0] == tiny_lm.tokenizer.bos_token_id  # the tokenizer adds BOS; the text does not show it
    offsets = texts.offsets(ids, TEXT)
    assert offsets[:2] == [0, 0]
    for token_id, offset in zip(ids[1:], offsets[1:], strict=True):
        label = texts.label(token_id)
        if not label.startswith("bytes:"):
            assert TEXT.startswith(label, offset), (label, offset)
    assert offsets == sorted(offsets) and offsets[-1] == len(TEXT) - 1


def test_a_bos_the_text_shows_takes_its_room(texts, tiny_lm) -> None:
    text = "<s>hello"
    ids = tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tiny_lm.tokenizer.bos_token_id
    assert texts.offsets(ids, text)[1] == len("<s>")


def test_echo_text_offsets_are_not_shifted_by_the_bos_text(decode_server) -> None:
    server = decode_server()
    body = {
        "model": server.name,
        "prompt": TEXT,
        "echo": True,
        "logprobs": 0,
        "max_tokens": 2,
        "temperature": 0,
    }
    with server.client() as client:
        choice = client.post("/v1/completions", json=body).json()["choices"][0]
    text, logprobs = choice["text"], choice["logprobs"]
    assert text.startswith(TEXT)
    assert logprobs["text_offset"][:3] == [0, 0, 1]  # <s> (no room), h, the first byte of é
    for label, offset in zip(logprobs["tokens"], logprobs["text_offset"], strict=True):
        if not label.startswith(("bytes:", "<")):
            assert text.startswith(label, offset), (label, offset)
