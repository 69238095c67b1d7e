"""One sequence in the decode batch: its KV slot, where it stands, and its finish rules.

The rules are those of `engine.generation.stream_completion` (one request alone): a token in the
model's EOS set (unless ignore_eos) or in stop_token_ids ends with "stop" (empty text), a stop string
ends with "stop" (text cut before it),
max_tokens or a full context ends with "length". `take` applies them to each new token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from hybrid_workers.decode.engine_api import KVSlot
from hybrid_workers.engine.detokenize import TextAssembler
from hybrid_workers.engine.generation import TextStep
from hybrid_workers.engine.sampling import SamplingParams


class SequenceRun:
    """A sequence from admission (slot reserved) until it leaves the batch; `done` is set when it left."""

    def __init__(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        slot: KVSlot,
        tokenizer: Any,
        eos_token_ids: frozenset[int],
        max_context: int,
        on_token: Callable[[TextStep], None],
        cancelled: threading.Event,
    ) -> None:
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.slot = slot
        self.on_token = on_token
        self.cancelled = cancelled
        self.done = threading.Event()
        self.error: Exception | None = None  # set when the sequence failed
        self.generated: list[int] = []
        self.prefilled = 0  # prompt positions whose KV exists (local prefill progress)
        self.finished = False
        # EOS (unless params.ignore_eos) and params.stop_token_ids end the sequence, as in stream_completion
        self._eos = set(params.stop_token_ids) | (set() if params.ignore_eos else set(eos_token_ids))
        self._text = TextAssembler(tokenizer, params.stop)
        self._room = min(params.max_tokens, max_context - len(prompt_ids))

    @property
    def position(self) -> int:
        """Where the last generated token goes in the KV slot (the next step's input position)."""
        return len(self.prompt_ids) + len(self.generated) - 1

    @property
    def step(self) -> int:
        """Generation step of the next token to sample (0 = first)."""
        return len(self.generated)

    def take(self, token: int, logprob: float) -> TextStep:
        """Record the sampled token, hand its TextStep to `on_token`, and return it."""
        self.generated.append(token)
        if token in self._eos:
            step = TextStep(token, logprob, self._text.flush(), "stop")
        else:
            delta = self._text.add(token)
            if self._text.stopped:
                step = TextStep(token, logprob, delta, "stop")
            elif len(self.generated) >= self._room:
                step = TextStep(token, logprob, delta + self._text.flush(), "length")
            else:
                step = TextStep(token, logprob, delta, None)
        self.finished = step.finish_reason is not None
        self.on_token(step)
        return step
