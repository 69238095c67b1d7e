"""Builds valid KV frame streams for a small fake model, for receiver and server tests to corrupt."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from hybrid_workers.enums import WireEncoding
from hybrid_workers.kv.checks import ReceiverModel
from hybrid_workers.kv.chunker import build_header, layer_chunks
from hybrid_workers.kv.frames import MIN_CHUNK_BYTES, Frame, KVRequest, Trailer
from hybrid_workers.torch_dtypes import dtype_name

MODEL = ReceiverModel(
    fingerprint="ab" * 32, num_layers=3, num_kv_heads=2, head_dim=8, dtype=torch.float32, vocab_size=100
)
# 2 heads x 8 dims x 4 bytes = 64 bytes per token: 1500 tokens make each tensor two 64 KiB chunks.
LONG_PROMPT = 1500


@dataclass
class Stream:
    """A valid stream plus the tensors it carries."""

    request: KVRequest
    frames: list[Frame]
    layers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


def make_stream(
    prompt_tokens: int = 5,
    encoding: WireEncoding = WireEncoding.NONE,
    model: ReceiverModel = MODEL,
    seed: int = 0,
) -> Stream:
    """Header, every layer's chunks (64 KiB), Trailer, for random K/V of `prompt_tokens` tokens."""
    generator = torch.Generator().manual_seed(seed)
    request = KVRequest(token_ids=tuple(range(prompt_tokens)), encoding=encoding, request_id=f"req-{seed}")
    shape = model.layer_shape(prompt_tokens)
    header = build_header(
        request,
        model_name="fake",
        fingerprint=model.fingerprint,
        num_layers=model.num_layers,
        layer_shape=shape,
        dtype=dtype_name(model.dtype),
        chunk_bytes=MIN_CHUNK_BYTES,
    )
    stream = Stream(request=request, frames=[header])
    for index in range(model.num_layers):
        keys, values = (torch.randn(shape, generator=generator).to(model.dtype) for _ in range(2))
        stream.layers.append((keys, values))
        stream.frames.extend(layer_chunks(index, keys, values, encoding, MIN_CHUNK_BYTES))
    stream.frames.append(trailer(model.num_layers))
    return stream


def trailer(num_layers: int, first_token: int = 7) -> Trailer:
    """A plausible trailer for `num_layers` layers."""
    return Trailer(
        first_token=first_token,
        first_logprob=-1.5,
        layer_seconds=(0.01,) * num_layers,
        layer_done_seconds=tuple(0.01 * (i + 1) for i in range(num_layers)),
        queue_seconds=0.0,
        prefill_seconds=0.01 * num_layers,
        prefill_start_unix=1.0,
        prefill_end_unix=2.0,
        send_tail_seconds=0.001,
    )
