"""How logprobs show a token: its own bytes, a name unique to it, and where it sits in the returned text.

A byte-level tokenizer has tokens that hold part of a UTF-8 character. Decoded alone they all read as
U+FFFD, so naming tokens by their decoded text would give several tokens one name (and a legacy
`top_logprobs` dict fewer than N entries) and chat `bytes` would carry U+FFFD's bytes. Such tokens are
named as OpenAI names them, `bytes:\\xe2\\x80`, and `bytes` carries the token's own bytes.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Sequence
from typing import Any

_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte tokens


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte (the inverse of its `bytes_to_unicode`)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars, strict=True)}


class TokenTexts:
    """Bytes, names and text offsets of one tokenizer's tokens (cached per token; thread-safe enough:
    a race computes the same value twice)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.special = frozenset(int(i) for i in getattr(tokenizer, "all_special_ids", ()) or ())
        self._bytes: dict[int, bytes] = {}
        self._labels: dict[int, str] = {}

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes this token stands for (for a special token: its text)."""
        cached = self._bytes.get(token_id)
        if cached is None:
            cached = self._bytes[token_id] = self._own_bytes(token_id)
        return cached

    def _own_bytes(self, token_id: int) -> bytes:
        text = str(self.tokenizer.decode([token_id]))
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if token_id in self.special or not isinstance(piece, str):
            return text.encode("utf-8")
        table = _byte_decoder()
        if piece and all(c in table for c in piece):
            raw = bytes(table[c] for c in piece)
            if raw.decode("utf-8", errors="replace") == text:  # it is a byte-level token
                return raw
        match = _BYTE_FALLBACK.fullmatch(piece)
        if match:
            return bytes([int(match.group(1), 16)])
        return text.encode("utf-8")

    def label(self, token_id: int) -> str:
        """The token's name: its text, or `bytes:\\xNN...` when its bytes are not whole characters."""
        cached = self._labels.get(token_id)
        if cached is None:
            raw = self.token_bytes(token_id)
            try:
                raw.decode("utf-8")
                cached = str(self.tokenizer.decode([token_id]))
            except UnicodeDecodeError:
                cached = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
            self._labels[token_id] = cached
        return cached

    def top_dict(self, pairs: Sequence[tuple[int, float]]) -> dict[str, float]:
        """{name: logprob} with one entry per token, even where two names would coincide."""
        top: dict[str, float] = {}
        for token_id, logprob in pairs:
            name = self.label(token_id)
            if name in top:
                name = f"{name}[{token_id}]"
            top.setdefault(name, logprob)
        return top

    def offsets(self, token_ids: Sequence[int], text: str, start: int = 0) -> list[int]:
        """Where each token starts in `text` (characters), the first at `start`.

        A special token the text does not show (a BOS the server added, an EOS) takes no room; the
        bytes of a character split over several tokens count once, at the token that completes it.
        """
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        offsets, position = [], start
        for token_id in token_ids:
            offsets.append(min(position, len(text)))
            if token_id in self.special:
                shown = self.label(token_id)
                if shown and text.startswith(shown, position):
                    position += len(shown)
                continue
            position += len(decoder.decode(self.token_bytes(token_id)))
        return offsets
