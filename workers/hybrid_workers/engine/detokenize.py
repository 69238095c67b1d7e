"""Incremental detokenization with stop strings: turns a token stream into safe-to-show text deltas."""

from __future__ import annotations

from typing import Any

_INCOMPLETE = "\ufffd"  # what a byte-level tokenizer decodes a partial UTF-8 character to


class TextAssembler:
    """Accumulates generated token ids and releases text that can no longer change or become a stop string.

    Text is held back while it ends in an incomplete UTF-8 character or could be the beginning of a
    stop string. When a stop string appears, the text before it is released and `stopped` is set.
    """

    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.token_ids: list[int] = []
        self.emitted = 0  # characters of the decoded text already released
        self.stopped = False

    def _text(self) -> str:
        return str(self.tokenizer.decode(self.token_ids, skip_special_tokens=True))

    def _first_stop(self, text: str) -> int:
        """Index of the earliest stop string in the unreleased part of `text` (or beyond), else -1."""
        longest = max((len(s) for s in self.stop), default=0)
        start = max(0, self.emitted - longest + 1)
        hits = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        return min(hits, default=-1)

    def _held_suffix(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        held = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(text) - self.emitted), held, -1):
                if text.endswith(stop[:size]):
                    held = size
                    break
        return held

    def add(self, token_id: int) -> str:
        """Add one token; return the newly released text (may be empty)."""
        if self.stopped:
            raise RuntimeError("TextAssembler: token added after a stop string ended the text")
        self.token_ids.append(token_id)
        text = self._text()
        cut = self._first_stop(text)
        if cut >= 0:
            self.stopped = True
            return self._release(text, max(cut, self.emitted))
        if text.endswith(_INCOMPLETE):
            return ""
        return self._release(text, len(text) - self._held_suffix(text))

    def flush(self) -> str:
        """Release everything still held back (the generation ended for another reason)."""
        if self.stopped:
            return ""
        return self._release(self._text(), None)

    def _release(self, text: str, end: int | None) -> str:
        end = len(text) if end is None else end
        delta = text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        return delta
