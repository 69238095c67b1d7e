"""Validation of a Header and a Trailer against the request and the receiving model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.frames import (
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    PROTOCOL_VERSION,
    Header,
    KVRequest,
    Trailer,
)
from hybrid_workers.torch_dtypes import dtype_name


@dataclass(frozen=True)
class ReceiverModel:
    """What the receiving (decode) side knows about its own model; KV must fit it exactly."""

    fingerprint: str  # the model identity (model_identity.py)
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype
    vocab_size: int

    @classmethod
    def of(cls, lm: object) -> ReceiverModel:
        """From an engine LoadedModel (duck-typed, so this module does not import the engine)."""
        return cls(
            fingerprint=lm.fingerprint,  # type: ignore[attr-defined]
            num_layers=lm.num_layers,  # type: ignore[attr-defined]
            num_kv_heads=lm.num_kv_heads,  # type: ignore[attr-defined]
            head_dim=lm.head_dim,  # type: ignore[attr-defined]
            dtype=lm.dtype,  # type: ignore[attr-defined]
            vocab_size=lm.vocab_size,  # type: ignore[attr-defined]
        )

    def layer_shape(self, prompt_tokens: int) -> tuple[int, int, int, int]:
        """[batch, kv_heads, seq, head_dim] of one layer's keys (and values)."""
        return (1, self.num_kv_heads, prompt_tokens, self.head_dim)


def check_header(header: Header, request: KVRequest, model: ReceiverModel) -> None:
    """Raise KVProtocolError (VERSION, FINGERPRINT, DTYPE or BAD_HEADER) unless `header` fits exactly."""
    if header.protocol_version != PROTOCOL_VERSION:
        raise KVProtocolError(
            Reason.VERSION,
            f"peer speaks protocol version {header.protocol_version}, this side {PROTOCOL_VERSION}",
        )
    if header.model_fingerprint != model.fingerprint:
        raise KVProtocolError(
            Reason.FINGERPRINT,
            f"KV is from model {header.model_name!r} ({header.dtype}, "
            f"model identity {header.model_fingerprint}), "
            f"this worker runs model identity {model.fingerprint} ({dtype_name(model.dtype)}); "
            "give both workers the same model files",
        )
    if header.dtype != dtype_name(model.dtype):
        raise KVProtocolError(
            Reason.DTYPE,
            f"KV is in {header.dtype}, this worker computes in {dtype_name(model.dtype)}; "
            "give both workers the same --dtype",
        )
    for problem in _header_problems(header, request, model):
        raise KVProtocolError(Reason.BAD_HEADER, problem)


def _header_problems(header: Header, request: KVRequest, model: ReceiverModel) -> list[str]:
    expected_shape = model.layer_shape(len(request.token_ids))
    checks = [
        (
            header.request_id == request.request_id,
            f"request id {header.request_id!r}, asked {request.request_id!r}",
        ),
        (
            header.mode == request.mode,
            f"transfer mode {header.mode}, asked {request.mode} (the prefill worker ignored the mode)",
        ),
        (
            header.dtype == dtype_name(model.dtype),
            f"dtype {header.dtype!r}, expected {dtype_name(model.dtype)!r}",
        ),
        (
            header.num_layers == model.num_layers,
            f"{header.num_layers} layers, the model has {model.num_layers}",
        ),
        (
            len(header.keys_shapes) == len(header.values_shapes) == model.num_layers,
            f"{len(header.keys_shapes)}/{len(header.values_shapes)} layer shapes "
            f"for {model.num_layers} layers",
        ),
        (header.encoding == request.encoding, f"encoding {header.encoding}, asked {request.encoding}"),
        (header.mode == request.mode, f"mode {header.mode}, asked {request.mode}"),
        (
            MIN_CHUNK_BYTES <= header.chunk_bytes <= MAX_CHUNK_BYTES,
            f"chunk size {header.chunk_bytes} outside {MIN_CHUNK_BYTES}..{MAX_CHUNK_BYTES}",
        ),
        (
            not header.data_connection or bool(request.transfer_id),
            "the layers follow on a data connection, but this request asked for none",
        ),
        (
            not header.data_connection or 0 < header.data_port < 65536,
            f"data connection port {header.data_port}, not a TCP port",
        ),
        (
            header.prompt_tokens == len(request.token_ids),
            f"{header.prompt_tokens} prompt tokens, asked {len(request.token_ids)}",
        ),
    ]
    problems = [f"header says {message}" for ok, message in checks if not ok]
    for index, (keys, values) in enumerate(zip(header.keys_shapes, header.values_shapes, strict=False)):
        if keys != expected_shape or values != expected_shape:
            problems.append(f"header says layer {index} shapes {keys}/{values}, expected {expected_shape}")
    return problems


def check_trailer(trailer: Trailer, model: ReceiverModel) -> None:
    """Raise KVProtocolError(BAD_TRAILER) unless the first token and the timings are plausible."""
    if not 0 <= trailer.first_token < model.vocab_size:
        raise KVProtocolError(
            Reason.BAD_TRAILER,
            f"first token {trailer.first_token} outside the vocabulary (size {model.vocab_size})",
        )
    if not (math.isfinite(trailer.first_logprob) and trailer.first_logprob <= 1e-3):
        raise KVProtocolError(
            Reason.BAD_TRAILER, f"first token logprob {trailer.first_logprob} is not a log-probability"
        )
    for name in ("layer_seconds", "layer_done_seconds"):
        timings = getattr(trailer, name)
        if len(timings) != model.num_layers:
            raise KVProtocolError(Reason.BAD_TRAILER, f"{len(timings)} {name} for {model.num_layers} layers")
    if len(trailer.layer_send_seconds) not in (0, model.num_layers):
        raise KVProtocolError(
            Reason.BAD_TRAILER,
            f"{len(trailer.layer_send_seconds)} layer_send_seconds for {model.num_layers} layers",
        )
    durations = (
        *trailer.layer_send_seconds,
        *trailer.layer_seconds,
        *trailer.layer_done_seconds,
        trailer.queue_seconds,
        trailer.prefill_seconds,
    )
    if not all(math.isfinite(value) and value >= 0 for value in (*durations, trailer.send_tail_seconds)):
        raise KVProtocolError(Reason.BAD_TRAILER, "trailer timings must be finite and non-negative")
