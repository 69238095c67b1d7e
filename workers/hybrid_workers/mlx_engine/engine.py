"""MlxDecodeEngine: the MLX implementation of decode/engine_api.DecodeEngine.

Slots are MlxKVSlot; a local prefill runs the prompt in chunks through mlx-lm's own forward pass;
`step` runs one batched forward for all running sequences (mlx_engine/batch.py). Logits come back
to the host as float32 torch rows, and tokens are chosen by the torch engine's own `sample`, so
greedy, temperature, top-k, top-p and the per-step seeded RNG behave exactly as on the torch engine:
a first token sampled by a torch prefill worker and the rest here reproduce a single-machine run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import torch

from hybrid_workers.decode.engine_api import StepEntry
from hybrid_workers.decode.engine_base import EngineBase
from hybrid_workers.engine.sampling import SamplingParams, sample
from hybrid_workers.mlx_engine.arrays import to_torch_float32
from hybrid_workers.mlx_engine.batch import step_logits
from hybrid_workers.mlx_engine.kv_slot import MlxKVSlot
from hybrid_workers.mlx_engine.loading import MlxModel


class MlxDecodeEngine(EngineBase):
    """Batched decode on an MlxModel; `step`/`prefill_chunk` run under MlxModel.computing()."""

    def __init__(self, mm: MlxModel) -> None:
        super().__init__(mm)
        self.mm = mm

    def new_slot(self, prompt_len: int, max_tokens: int) -> MlxKVSlot:
        return MlxKVSlot(self.mm, prompt_len, self.slot_capacity(prompt_len, max_tokens))

    def prefill_chunk(self, slot: Any, token_ids: Sequence[int], start: int) -> torch.Tensor | None:
        assert isinstance(slot, MlxKVSlot)
        end = self.chunk_end(slot, token_ids, start)
        with self.mm.computing():
            caches = slot.engine_caches()
            if caches[0].offset != start:
                raise ValueError(f"chunk starts at {start}, the slot holds {caches[0].offset} positions")
            logits = self.mm.model(mx.array([list(token_ids)]), cache=caches)[0, -1]  # [vocab]
            mx.eval(logits, [(cache.keys, cache.values) for cache in caches])
            if end < slot.prompt_len:
                return None
            slot.mark_prefilled()
            return to_torch_float32(logits)

    def step(self, entries: Sequence[StepEntry]) -> list[torch.Tensor]:
        slots: list[MlxKVSlot] = []
        with self.mm.computing():
            for slot, _token, position in entries:
                assert isinstance(slot, MlxKVSlot)
                if (
                    not slot.complete
                    or not slot.prompt_len <= position < slot.capacity
                    or slot.length != position
                ):
                    raise ValueError(
                        f"position {position}: slot not ready, not at its next free position, or outside "
                        f"[{slot.prompt_len}, {slot.capacity})"
                    )
                slots.append(slot)
            caches = [slot.engine_caches() for slot in slots]
            logits = step_logits(self.mm.model, caches, [token for _, token, _ in entries])  # [batch, vocab]
            return list(to_torch_float32(logits))

    def sample(self, logits: Any, params: SamplingParams, step: int) -> tuple[int, float]:
        return sample(logits, params, step)
