"""The engine-neutral decode-engine interface: KV slots that prompts land in, and batched steps.

The decode worker, its batch loop and the KV receivers talk to an engine only through these
protocols, so none of them imports torch- or mlx-specific code. The torch engine
(`engine/batched.py`, `engine/kv_slot.py`) and the MLX engine are siblings behind it.

Life of one sequence:

1. `engine.new_slot(prompt_len, max_tokens)` reserves the sequence's KV storage (room for the prompt
   plus `max_tokens`, never the model's whole context). Nothing is allocated per step afterwards.
2. The prompt's K/V lands in the slot layer by layer, from one of two writers:
   - a KV receiver (remote prefill): for each layer, `slot.layer_target(i)` gives writable byte
     buffers; the receiver fills them (wire chunks copied in place, or `recv_into` straight from a
     socket) and calls `slot.commit_layer(i)`. `slot.write_layer(i, keys, values)` does both for a
     layer the caller already holds as arrays;
   - the engine itself (local prefill): `engine.prefill_chunk(slot, ids, start)` runs a chunk of the
     prompt through the model and writes its K/V; the last chunk returns the next-token logits.
3. Once every layer is committed (`slot.complete`), the sequence may join a batch:
   `engine.step([(slot, token, position), ...])` runs ONE forward pass for all of them, appends each
   token's K/V to its own slot and returns one logits row per sequence.
4. `engine.sample(row, params, step)` picks the next token of one sequence; the randomness depends
   only on (seed, step), never on batch-mates.
5. `slot.release()` returns the storage (idempotent); the slot may not be used afterwards.

Threads: a slot is written by one thread at a time (its receiver, or the engine loop for local
prefill); `step` and `prefill_chunk` are called from the one engine-loop thread. `commit_layer` and
`write_layer` never touch the model and are safe while the loop runs steps for other slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # a frozen dataclass without torch; imported for types only (no engine at run time)
    from hybrid_workers.engine.sampling import SamplingParams


@dataclass(frozen=True)
class LayerTarget:
    """Where one layer of a prompt's K/V is written: two writable raw byte buffers.

    `keys` and `values` are numpy uint8 arrays of `nbytes` each, either flat ([nbytes], C-contiguous:
    staging memory) or [kv_heads, prompt_len * head_dim * itemsize] with each row contiguous but rows
    strided (the storage itself, whose rows are `capacity` positions apart); kv.layer_bytes reads and
    writes both forms (`byte_parts`: the contiguous pieces in order, which one `recvmsg_into` fills).
    Their bytes are the layer's [kv_heads, prompt_len, head_dim] elements in row-major order, in
    `dtype` (the model's KV dtype, e.g. "bfloat16"): exactly the wire's `none` encoding of the layer,
    so uncompressed wire bytes are written in at their byte offset; fp8/int8 bytes are staged
    elsewhere and decoded into them.
    """

    layer: int
    keys: np.ndarray  # [nbytes] or [kv_heads, row bytes] uint8, writable
    values: np.ndarray  # same shape as keys
    shape: tuple[int, int, int]  # (kv_heads, prompt_len, head_dim)
    dtype: str  # element type of the bytes: float32 | bfloat16 | float16

    @property
    def nbytes(self) -> int:
        """Bytes of each of keys and values."""
        return int(self.keys.nbytes)


class KVSlot(Protocol):
    """One sequence's place in the engine's KV storage: filled with its prompt, then grown by decode.

    Invariants: layers are committed at most once each, in any order; the slot is `complete` when
    all `num_layers` are; a released slot raises ValueError on every method except `release`.
    """

    @property
    def prompt_len(self) -> int:
        """Prompt positions the slot receives before decoding starts."""

    @property
    def capacity(self) -> int:
        """Positions the slot holds at most (prompt_len + max_tokens, capped by the model's context)."""

    @property
    def num_layers(self) -> int:
        """Decoder layers of the model (layer indices run 0..num_layers-1)."""

    @property
    def nbytes(self) -> int:
        """Bytes of KV storage the slot holds (what admission counts against the KV budget)."""

    @property
    def complete(self) -> bool:
        """True once every layer of the prompt is committed (the sequence may join a batch)."""

    def layer_target(self, layer: int) -> LayerTarget:
        """Writable buffers for layer `layer`'s prompt K/V; valid until `commit_layer(layer)`.

        On the CPU the torch engine returns its storage itself (row-strided: see LayerTarget), so the
        bytes land where decode reads them; elsewhere (a GPU, MLX's own arrays) staging memory that
        `commit_layer` copies in, so bytes written after the commit are lost. Until the commit the
        layer is not part of the sequence (it never decodes from an uncommitted layer). May be
        called again for the same uncommitted layer (same buffers). Raises ValueError for an index out
        of range or a layer already committed.
        """

    def commit_layer(self, layer: int) -> None:
        """Layer `layer`'s buffers are fully written: make them the sequence's K/V for that layer.

        Raises ValueError for an index out of range, a layer committed twice, or a layer whose target
        was never asked for.
        """

    def write_layer(self, layer: int, keys: Any, values: Any) -> None:
        """Copy a whole layer held as arrays (anything with the buffer protocol or `.numpy()`) and commit.

        `keys`/`values` hold [.., kv_heads, prompt_len, head_dim] elements in the slot's dtype
        (a leading batch dimension of 1 is accepted). Raises ValueError on a shape or size mismatch.
        """

    def release(self) -> None:
        """Give the storage back (idempotent); in-flight writers must stop using their targets."""


# One sequence in a batched step: its slot, the token to append, and that token's position.
StepEntry = tuple[KVSlot, int, int]


class DecodeEngine(Protocol):
    """A loaded model that decodes many sequences per forward pass (one engine per decode worker)."""

    @property
    def kv_bytes_per_token(self) -> int:
        """KV bytes one position takes over all layers (keys and values); sizes slots and budgets."""

    def new_slot(self, prompt_len: int, max_tokens: int) -> KVSlot:
        """Reserve storage for a sequence of `prompt_len` prompt and up to `max_tokens` new positions.

        Does not check any budget (admission does); raises ValueError when prompt_len + max_tokens
        exceeds the model's context or prompt_len < 1.
        """

    def prefill_chunk(self, slot: KVSlot, token_ids: Sequence[int], start: int) -> Any | None:
        """Run prompt positions [start, start + len(token_ids)) of `slot` through the model.

        Writes their K/V into the slot (all layers); chunks must come in order from start 0. Returns
        the next-token logits row after the last prompt position (an engine-specific object for
        `sample`) when the chunk ends the prompt, else None. The slot is `complete` afterwards.
        """

    def step(self, entries: Sequence[StepEntry]) -> list[Any]:
        """One forward pass for every entry: append each token's K/V at its position, return logits.

        Each entry's slot must be complete and `position` must be its next free position (prompt_len
        for the first step, then +1 each step) within the slot's capacity. Returns one logits row per
        entry, in order. A row depends only on its own sequence's tokens (batch-mates change it at most
        by floating-point rounding of batched matrix products).
        """

    def sample(self, logits: Any, params: SamplingParams, step: int) -> tuple[int, float]:
        """(token, logprob) for generation step `step` (0 = first token) of one sequence.

        Randomness depends only on (params.seed, step); logprob is under the unmodified distribution.
        """


def slot_sink(slot: KVSlot) -> Any:
    """A kv.receiver LayerSink that writes each complete layer into `slot` (copy + commit).

    For receivers that decode a layer into arrays of their own first; a receiver that can write
    wire bytes in place uses `slot.layer_target` / `slot.commit_layer` directly instead.
    """

    def sink(index: int, keys: Any, values: Any) -> None:
        slot.write_layer(index, keys, values)

    return sink
