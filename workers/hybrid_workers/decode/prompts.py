"""Prompts -> token ids: a completions prompt (text or ids) or chat messages through the chat template.

Tokenising a long prompt takes seconds, so these run in a worker thread, and the cheap size checks
come first: a text longer than `Limits.max_prompt_chars` cannot fit the context whatever it tokenises
to, and is refused before the tokenizer sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hybrid_workers.decode.api_errors import bad_request

# Text normalisation (NFKC, whitespace rules) may shrink a text; the character bound allows for it.
_NORMALISATION_MARGIN = 2


@dataclass(frozen=True)
class Limits:
    """What the served model accepts."""

    served_model_name: str
    context: int  # prompt + completion tokens
    vocab_size: int
    max_prompt_chars: int = 1 << 62  # a text prompt longer than this cannot fit `context`
    eos_token_ids: frozenset[int] = frozenset()


def max_prompt_chars(tokenizer: Any, context: int) -> int:
    """Characters a prompt of `context` tokens can have at most: context x the longest token's text.

    A vocabulary entry is at least as long as the text it decodes to (byte-level BPE: one character
    per byte; SentencePiece: one per character), so a longer text needs more tokens than `context`.
    """
    longest = max((len(token) for token in tokenizer.get_vocab()), default=1)
    return context * max(longest, 1) * _NORMALISATION_MARGIN


def check_text_size(chars: int, limits: Limits, param: str) -> None:
    """400 context_length_exceeded when `chars` characters cannot fit the context (before tokenising)."""
    if chars > limits.max_prompt_chars:
        raise bad_request(
            f"{param}: {chars} characters cannot fit the context of {limits.context} tokens (at most "
            f"{limits.max_prompt_chars} characters); shorten the prompt",
            param=param,
            code="context_length_exceeded",
        )


def encode_text(tokenizer: Any, text: str, add_special_tokens: bool) -> tuple[int, ...]:
    """Token ids of `text`; a text that already starts with the BOS token gets no second one.

    (lm-eval's `tokenized_requests=False` decodes its own token ids, BOS included, back to text.)
    """
    ids = [int(t) for t in tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]]
    bos = getattr(tokenizer, "bos_token_id", None)
    if add_special_tokens and bos is not None and len(ids) >= 2 and ids[0] == ids[1] == bos:
        ids = ids[1:]
    return tuple(ids)


def completion_prompt(
    prompt: Any, tokenizer: Any, limits: Limits, add_special_tokens: bool
) -> tuple[int, ...]:
    """A prompt given as text, [text], token ids or [token ids] -> token ids (one prompt only)."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) != 1:
            raise bad_request(f"prompt: {len(prompt)} prompts given; send one per request", "prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        check_text_size(len(prompt), limits, "prompt")
        ids = encode_text(tokenizer, prompt, add_special_tokens)
        if not ids:
            raise bad_request(
                "prompt: empty, and no BOS token is added (the tokenizer has none, or add_special_tokens "
                "is false); give at least one character",
                param="prompt",
            )
        return ids
    return _token_ids(prompt, limits)


def _token_ids(prompt: Sequence[int], limits: Limits) -> tuple[int, ...]:
    if not prompt:
        raise bad_request("prompt: an empty list of token ids; give at least one token", param="prompt")
    if len(prompt) > limits.context:
        raise bad_request(
            f"prompt: {len(prompt)} token ids exceed the context length of {limits.context} tokens",
            param="prompt",
            code="context_length_exceeded",
        )
    bad = [t for t in prompt if not 0 <= t < limits.vocab_size]
    if bad:
        raise bad_request(
            f"prompt: token id {bad[0]} outside the vocabulary [0, {limits.vocab_size})", "prompt"
        )
    return tuple(prompt)


def prompt_text(prompt: Any, prompt_ids: tuple[int, ...], tokenizer: Any) -> str:
    """The prompt as text (what `echo` prepends): as given, or decoded when given as ids."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    return str(tokenizer.decode(list(prompt_ids), skip_special_tokens=True))


def chat_prompt(body: Any, tokenizer: Any, limits: Limits) -> tuple[int, ...]:
    """The messages rendered with the tokenizer's chat template, as token ids."""
    if not getattr(tokenizer, "chat_template", None):
        raise bad_request("this model's tokenizer has no chat template; use /v1/completions", "messages")
    if body.continue_final_message and body.add_generation_prompt:
        raise bad_request(
            "continue_final_message: set add_generation_prompt to false with it", "continue_final_message"
        )
    messages = [{"role": m.role, "content": text_of(m.content)} for m in body.messages]
    check_text_size(sum(len(m["content"]) for m in messages), limits, "messages")
    try:
        text = tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=body.add_generation_prompt,
            continue_final_message=body.continue_final_message,
        )
    except Exception as exc:  # a template may raise anything (jinja errors, its own raise_exception)
        raise bad_request(f"messages: the chat template refused them: {exc}", param="messages") from None
    return encode_text(tokenizer, str(text), body.add_special_tokens)


def text_of(content: Any) -> str:
    """A message's content as one text (parts joined)."""
    return content if isinstance(content, str) else "".join(part.text for part in content)
