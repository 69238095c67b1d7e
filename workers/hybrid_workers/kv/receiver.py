"""Receiver state machine: validates every frame of one KV transfer and assembles layers as they complete.

Order (docs/kv-wire.md): Header; for layer 0..L-1: keys chunks at offsets 0, c, 2c, ... then values
chunks likewise; Trailer. Anything else raises KVProtocolError with a specific Reason, after which the
receiver holds no tensor memory (the buffers of the layer in flight are dropped).

With a `destination` (a decode/engine_api.KVSlot), uncompressed chunks are copied straight into the
slot's layer target at their byte offset and each complete layer is committed there (no tensor of
the receiver's own); fp8/int8 chunks are staged, decoded, then written into the target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hybrid_workers.enums import DType, WireEncoding
from hybrid_workers.kv import compression
from hybrid_workers.kv.checks import ReceiverModel, check_header, check_trailer
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.frames import Frame, Header, KVRequest, LayerChunk, TensorKind, Trailer, checksum
from hybrid_workers.kv.layer_bytes import write_at
from hybrid_workers.torch_dtypes import TORCH_DTYPES

# Called with (layer index, keys, values) as soon as a layer is complete; tensors are
# [batch, kv_heads, seq, head_dim] on the CPU in the model's dtype.
LayerSink = Callable[[int, torch.Tensor, torch.Tensor], None]
_KIND_ORDER = {TensorKind.KEYS: 0, TensorKind.VALUES: 1}  # keys travel before values


@dataclass
class _TensorBuffer:
    """The tensor being received: its bytes so far and its scales."""

    kind: TensorKind
    data: np.ndarray  # [nbytes] or [kv_heads, row bytes] uint8 (decode/engine_api.LayerTarget), in order
    filled: int = 0
    scales: np.ndarray | None = None  # [kv_heads] float32


class KVReceiver:
    """Feeds on frames of one request; hands each complete layer to `sink`; `trailer` once done."""

    def __init__(
        self, model: ReceiverModel, request: KVRequest, sink: LayerSink, destination: Any = None
    ) -> None:
        """`destination`: a KVSlot the layers land in; `sink` then gets views of the committed bytes."""
        self.model = model
        self.request = request
        self.sink = sink
        self.destination = destination
        self.header: Header | None = None
        self.trailer: Trailer | None = None
        self.layer = 0  # the layer being received
        self.wire_bytes = 0  # tensor + scale bytes received
        self._keys: torch.Tensor | None = None  # this layer's keys, once complete
        self._buffer: _TensorBuffer | None = None

    def feed(self, frame: Frame) -> int | None:
        """Validate and take one frame; returns the index of a layer it completed, else None."""
        try:
            return self._feed(frame)
        except KVProtocolError:
            self.release()
            raise

    def finish(self) -> Trailer:
        """The trailer; KVProtocolError(STREAM_ENDED) when the stream ended before it."""
        if self.trailer is None:
            where = self._position()
            self.release()
            raise KVProtocolError(Reason.STREAM_ENDED, f"stream ended before the trailer, {where}")
        return self.trailer

    def release(self) -> None:
        """Drop the tensors of the layer in flight (layers already handed to the sink are the caller's)."""
        self._buffer = None
        self._keys = None

    def _feed(self, frame: Frame) -> int | None:
        if self.trailer is not None:
            raise KVProtocolError(Reason.TRAILING_DATA, f"{type(frame).__name__} frame after the trailer")
        if isinstance(frame, Header):
            self._take_header(frame)
            return None
        if self.header is None:
            raise KVProtocolError(Reason.ORDER, f"{type(frame).__name__} frame before the header")
        if isinstance(frame, LayerChunk):
            return self._take_chunk(frame, self.header)
        self._take_trailer(frame)
        return None

    def _take_header(self, header: Header) -> None:
        if self.header is not None:
            raise KVProtocolError(Reason.ORDER, "a second header")
        check_header(header, self.request, self.model)
        self.header = header

    def _take_trailer(self, trailer: Trailer) -> None:
        if self.layer < self.model.num_layers:
            raise KVProtocolError(
                Reason.MISSING_LAYER,
                f"trailer arrived with layers {self.layer}..{self.model.num_layers - 1} missing "
                f"({self._position()})",
            )
        check_trailer(trailer, self.model)
        self.trailer = trailer

    def layer_buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """Where the current layer's keys and values bytes go when they arrive whole (data connection).

        The destination's own buffers for `none` (bytes received straight into the KV slot), else
        staging buffers decoded by `complete_layer`. Each is [wire bytes] uint8, writable.
        """
        header = self._require_header()
        if self._buffer is not None or self._keys is not None:
            raise KVProtocolError(Reason.ORDER, f"a whole layer while {self._position()}")
        if self.layer >= self.model.num_layers:
            raise KVProtocolError(Reason.ORDER, f"a layer after the last one ({self._position()})")
        keys = self._start_tensor(TensorKind.KEYS, header).data
        self._buffer = None
        values = self._start_tensor(TensorKind.VALUES, header).data
        self._buffer = None
        return keys, values

    def complete_layer(
        self, keys: np.ndarray, values: np.ndarray, keys_scales: bytes, values_scales: bytes
    ) -> int:
        """The current layer arrived whole into `layer_buffers()`: decode, commit, hand to the sink."""
        header = self._require_header()
        try:
            where = f"layer {self.layer}"
            self._keys = compression.decode(
                keys,
                self._scales(f"{where} keys", keys_scales, header.encoding),
                self.model.layer_shape(header.prompt_tokens),
                self.model.dtype,
                header.encoding,
            )
            buffer = _TensorBuffer(TensorKind.VALUES, values, values.nbytes)
            buffer.scales = self._scales(f"{where} values", values_scales, header.encoding)
            self.wire_bytes += keys.nbytes + values.nbytes + len(keys_scales) + len(values_scales)
            index = self._complete_tensor(buffer, header)
        except KVProtocolError:
            self.release()
            raise
        assert index is not None
        return index

    def _require_header(self) -> Header:
        if self.trailer is not None:
            raise KVProtocolError(Reason.TRAILING_DATA, "a layer after the trailer")
        if self.header is None:
            raise KVProtocolError(Reason.ORDER, "a layer before the header")
        return self.header

    def _take_chunk(self, chunk: LayerChunk, header: Header) -> int | None:
        if header.data_connection:
            raise KVProtocolError(
                Reason.ORDER,
                f"layer {chunk.layer} chunk on the gRPC stream, but the header announced the data connection",
            )
        self._check_place(chunk)
        buffer = self._buffer or self._start_tensor(chunk.kind, header)
        self._check_size(chunk, buffer, header.chunk_bytes)
        if chunk.crc32 != checksum(chunk.data, chunk.scales):
            raise KVProtocolError(
                Reason.CHECKSUM,
                f"layer {chunk.layer} {chunk.kind} chunk at offset {chunk.offset}: crc32 mismatch",
            )
        if chunk.offset == 0:
            buffer.scales = self._check_scales(chunk, header.encoding)
        elif chunk.scales:
            raise KVProtocolError(
                Reason.BAD_SCALES, f"layer {chunk.layer} {chunk.kind}: scales after offset 0"
            )
        write_at(buffer.data, buffer.filled, chunk.data)
        buffer.filled += len(chunk.data)
        self.wire_bytes += len(chunk.data) + len(chunk.scales)
        return self._complete_tensor(buffer, header) if buffer.filled == buffer.data.nbytes else None

    def _check_place(self, chunk: LayerChunk) -> None:
        """The chunk must be for the current layer, tensor and offset."""
        kind = (
            self._buffer.kind
            if self._buffer
            else (TensorKind.VALUES if self._keys is not None else TensorKind.KEYS)
        )
        where = f"layer {chunk.layer} {chunk.kind} chunk at offset {chunk.offset}"
        if chunk.layer >= self.model.num_layers:
            raise KVProtocolError(
                Reason.ORDER, f"{where}: layer index out of range 0..{self.model.num_layers - 1}"
            )
        if chunk.layer < self.layer or (
            chunk.layer == self.layer and _KIND_ORDER[chunk.kind] < _KIND_ORDER[kind]
        ):
            raise KVProtocolError(Reason.DUPLICATE_LAYER, f"{where}: that tensor was already complete")
        if chunk.layer > self.layer:
            raise KVProtocolError(Reason.MISSING_LAYER, f"{where} arrived while {self._position()}")
        if chunk.kind != kind:
            raise KVProtocolError(Reason.ORDER, f"{where} arrived while {self._position()}")
        filled = self._buffer.filled if self._buffer else 0
        if chunk.offset != filled:
            raise KVProtocolError(Reason.ORDER, f"{where}: expected offset {filled}")

    def _check_size(self, chunk: LayerChunk, buffer: _TensorBuffer, chunk_bytes: int) -> None:
        expected = min(chunk_bytes, buffer.data.nbytes - buffer.filled)
        where = f"layer {chunk.layer} {chunk.kind} chunk at offset {chunk.offset}"
        if len(chunk.data) > chunk_bytes:
            raise KVProtocolError(
                Reason.OVERSIZE_FRAME, f"{where} holds {len(chunk.data)} bytes, chunk size is {chunk_bytes}"
            )
        if len(chunk.data) > expected:
            raise KVProtocolError(
                Reason.OVERSIZE_FRAME,
                f"{where} holds {len(chunk.data)} bytes, past the tensor's end ({buffer.data.nbytes} bytes)",
            )
        if len(chunk.data) < expected:
            raise KVProtocolError(
                Reason.TRUNCATED_CHUNK, f"{where} holds {len(chunk.data)} bytes, expected {expected}"
            )

    def _check_scales(self, chunk: LayerChunk, encoding: WireEncoding) -> np.ndarray | None:
        return self._scales(f"layer {chunk.layer} {chunk.kind}", chunk.scales, encoding)

    def _scales(self, where: str, raw: bytes, encoding: WireEncoding) -> np.ndarray | None:
        """[kv_heads] float32 scales of one tensor (None for `none`); BAD_SCALES unless exactly right."""
        if encoding is WireEncoding.NONE:
            if raw:
                raise KVProtocolError(Reason.BAD_SCALES, f"{where}: scales sent with encoding none")
            return None
        expected = 4 * self.model.num_kv_heads
        if len(raw) != expected:
            raise KVProtocolError(
                Reason.BAD_SCALES, f"{where}: {len(raw)} bytes of scales, expected {expected}"
            )
        scales = np.frombuffer(raw, dtype="<f4")  # [kv_heads]
        if not (np.isfinite(scales).all() and (scales > 0).all()):
            raise KVProtocolError(
                Reason.BAD_SCALES, f"{where}: scales {scales.tolist()} not finite and positive"
            )
        return scales

    def _start_tensor(self, kind: TensorKind, header: Header) -> _TensorBuffer:
        shape = self.model.layer_shape(header.prompt_tokens)
        nbytes = compression.wire_nbytes(shape, TORCH_DTYPES[DType(header.dtype)], header.encoding)
        if self.destination is not None and header.encoding is WireEncoding.NONE:
            target = self.destination.layer_target(self.layer)
            data = target.keys if kind is TensorKind.KEYS else target.values  # written in place
            if data.nbytes != nbytes:
                raise KVProtocolError(
                    Reason.BAD_HEADER,
                    f"layer {self.layer}: {nbytes} wire bytes, destination holds {data.nbytes}",
                )
        else:
            data = _aligned_empty(nbytes)
        self._buffer = _TensorBuffer(kind=kind, data=data)
        return self._buffer

    def _complete_tensor(self, buffer: _TensorBuffer, header: Header) -> int | None:
        shape = self.model.layer_shape(header.prompt_tokens)
        tensor = compression.decode(buffer.data, buffer.scales, shape, self.model.dtype, header.encoding)
        self._buffer = None
        if buffer.kind is TensorKind.KEYS:
            self._keys = tensor
            return None
        keys, self._keys = self._keys, None
        assert keys is not None  # values are accepted only after complete keys
        index = self.layer
        self.layer += 1
        if self.destination is not None:
            self._commit(index, keys, tensor, header.encoding)
        self.sink(index, keys, tensor)
        return index

    def _commit(self, index: int, keys: torch.Tensor, values: torch.Tensor, encoding: WireEncoding) -> None:
        """Make layer `index` the destination's (decoded fp8/int8 tensors are written into its target)."""
        assert self.destination is not None
        if encoding is not WireEncoding.NONE:
            target = self.destination.layer_target(index)
            for buffer, tensor in ((target.keys, keys), (target.values, values)):
                buffer[...] = tensor.contiguous().view(torch.uint8).numpy().reshape(buffer.shape)
        self.destination.commit_layer(index)

    def _position(self) -> str:
        if self.header is None:
            return "waiting for the header"
        if self.layer >= self.model.num_layers:
            return "all layers received, waiting for the trailer"
        if self._buffer is not None:
            total = self._buffer.data.nbytes
            return f"in layer {self.layer} {self._buffer.kind} ({self._buffer.filled} of {total} bytes)"
        kind = TensorKind.VALUES if self._keys is not None else TensorKind.KEYS
        return f"waiting for layer {self.layer} {kind}"


def _aligned_empty(nbytes: int, alignment: int = 64) -> np.ndarray:
    """An uninitialised [nbytes] uint8 buffer starting on a cache-line boundary, like torch's allocator."""
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + nbytes]
