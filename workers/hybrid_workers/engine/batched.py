"""TorchDecodeEngine: the torch implementation of decode/engine_api.DecodeEngine (batched decode).

One `step` is one forward pass of the model over [batch, 1] tokens with per-row positions; attention
reads each sequence's own KV slot (engine/batch_attention.py). A local prefill runs the prompt in
chunks through the same path (batch of one), writing its K/V into the slot as it goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hybrid_workers.decode.engine_api import StepEntry
from hybrid_workers.decode.engine_base import EngineBase
from hybrid_workers.engine import batch_attention
from hybrid_workers.engine.batch_attention import BatchPlan
from hybrid_workers.engine.kv_slot import TorchKVSlot
from hybrid_workers.engine.loading import LoadedModel
from hybrid_workers.engine.sampling import SamplingParams, sample


class TorchDecodeEngine(EngineBase):
    """Batched decode on a LoadedModel; call `step`/`prefill_chunk` from one thread only."""

    def __init__(self, lm: LoadedModel) -> None:
        super().__init__(lm)
        self.lm = lm
        batch_attention.install(lm.model)

    def new_slot(self, prompt_len: int, max_tokens: int) -> TorchKVSlot:
        lm = self.lm
        capacity = self.slot_capacity(prompt_len, max_tokens)
        return TorchKVSlot(
            lm.num_layers, lm.num_kv_heads, lm.head_dim, prompt_len, capacity, lm.dtype, lm.device
        )

    def prefill_chunk(self, slot: Any, token_ids: Sequence[int], start: int) -> torch.Tensor | None:
        assert isinstance(slot, TorchKVSlot)
        end = self.chunk_end(slot, token_ids, start)
        logits = self._forward([slot], [list(token_ids)], [start])
        if end < slot.prompt_len:
            return None
        slot.mark_prefilled()
        return logits[0]

    def step(self, entries: Sequence[StepEntry]) -> list[torch.Tensor]:
        slots: list[TorchKVSlot] = []
        for slot, _token, position in entries:
            assert isinstance(slot, TorchKVSlot)
            if not slot.complete or not slot.prompt_len <= position < slot.capacity:
                raise ValueError(
                    f"position {position}: slot not ready or outside [{slot.prompt_len}, {slot.capacity})"
                )
            slots.append(slot)
        logits = self._forward(slots, [[token] for _, token, _ in entries], [p for _, _, p in entries])
        return list(logits)

    def _forward(self, slots: list[TorchKVSlot], tokens: list[list[int]], starts: list[int]) -> torch.Tensor:
        """Next-token logits [batch, vocab] float32 after each row's last token."""
        device = self.lm.device
        new = len(tokens[0])
        input_ids = torch.tensor(tokens, dtype=torch.long, device=device)  # [batch, new]
        offsets = torch.arange(new, device=device)  # [new]
        position_ids = torch.tensor(starts, device=device).unsqueeze(1) + offsets  # [batch, new]
        plan = BatchPlan(slots, starts)
        with torch.no_grad():
            output = self.lm.model(
                input_ids=input_ids,
                position_ids=position_ids,
                use_cache=False,
                logits_to_keep=1,
                **{batch_attention.PLAN_KEYWORD: plan},
            )
        return output.logits[:, -1].float()  # [batch, vocab]

    def sample(self, logits: Any, params: SamplingParams, step: int) -> tuple[int, float]:
        return sample(logits, params, step)


def free_memory_bytes(device: torch.device) -> int:
    """Memory free for KV on `device` now: CUDA's free memory, else the host's available memory."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)  # macOS: half the RAM
