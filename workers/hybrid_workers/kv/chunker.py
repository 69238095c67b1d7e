"""Sender side: one layer's keys and values -> LayerChunk frames (encoded, chunked, checksummed)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from hybrid_workers.enums import WireEncoding
from hybrid_workers.kv.compression import EncodedTensor, encode
from hybrid_workers.kv.frames import PROTOCOL_VERSION, Header, KVRequest, LayerChunk, TensorKind, checksum


def layer_chunks(
    layer: int,
    keys: torch.Tensor,
    values: torch.Tensor,
    encoding: WireEncoding,
    chunk_bytes: int,
) -> Iterator[LayerChunk]:
    """The frames of one layer in wire order: the keys' chunks, then the values' chunks.

    keys/values: [batch, kv_heads, seq, head_dim]. Each chunk's bytes are copied once out of the
    tensor, when kv.wire serializes the frame; the values are encoded only after the keys' chunks.
    """
    yield from tensor_chunks(layer, TensorKind.KEYS, encode(keys, encoding), chunk_bytes)
    yield from tensor_chunks(layer, TensorKind.VALUES, encode(values, encoding), chunk_bytes)


def tensor_chunks(
    layer: int, kind: TensorKind, encoded: EncodedTensor, chunk_bytes: int
) -> Iterator[LayerChunk]:
    """Split an encoded tensor into `chunk_bytes` chunks (the last may be shorter); scales go first."""
    data = encoded.data  # [nbytes] uint8
    for offset in range(0, max(len(data), 1), chunk_bytes):
        piece = data[offset : offset + chunk_bytes].data  # a view: kv.wire copies it once
        scales = encoded.scales if offset == 0 else b""
        yield LayerChunk(
            layer=layer, kind=kind, offset=offset, data=piece, crc32=checksum(piece, scales), scales=scales
        )


def build_header(
    request: KVRequest,
    *,
    model_name: str,
    fingerprint: str,
    num_layers: int,
    layer_shape: tuple[int, ...],
    dtype: str,
    chunk_bytes: int,
) -> Header:
    """The Header announcing `num_layers` layers of keys and values of `layer_shape` each."""
    shapes = (tuple(layer_shape),) * num_layers
    return Header(
        protocol_version=PROTOCOL_VERSION,
        request_id=request.request_id,
        model_fingerprint=fingerprint,
        model_name=model_name,
        num_layers=num_layers,
        keys_shapes=shapes,
        values_shapes=shapes,
        dtype=dtype,
        encoding=request.encoding,
        mode=request.mode,
        chunk_bytes=chunk_bytes,
        prompt_tokens=len(request.token_ids),
    )
