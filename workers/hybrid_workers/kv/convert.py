"""Protobuf <-> domain types, at the gRPC edge only; anything undecodable becomes a KVProtocolError."""

from __future__ import annotations

from hybrid_workers.enums import TransferMode, WireEncoding
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.frames import (
    Frame,
    Header,
    Heartbeat,
    KVRequest,
    LayerChunk,
    TensorKind,
    Trailer,
)
from hybrid_workers.kv.proto import kv_pb2

_ENCODINGS = {
    WireEncoding.NONE: kv_pb2.WIRE_ENCODING_NONE,
    WireEncoding.FP8: kv_pb2.WIRE_ENCODING_FP8,
    WireEncoding.INT8: kv_pb2.WIRE_ENCODING_INT8,
}
_MODES = {
    TransferMode.LAYERWISE: kv_pb2.TRANSFER_MODE_LAYERWISE,
    TransferMode.BULK: kv_pb2.TRANSFER_MODE_BULK,
}
_KINDS = {TensorKind.KEYS: kv_pb2.TENSOR_KIND_KEYS, TensorKind.VALUES: kv_pb2.TENSOR_KIND_VALUES}
_ENCODINGS_BACK: dict[int, WireEncoding] = {v: k for k, v in _ENCODINGS.items()}
_MODES_BACK: dict[int, TransferMode] = {v: k for k, v in _MODES.items()}
_KINDS_BACK: dict[int, TensorKind] = {v: k for k, v in _KINDS.items()}


def encoding_from_pb(value: int, default: WireEncoding | None = None) -> WireEncoding:
    """WireEncoding of a proto enum value; UNSPECIFIED gives `default` (an error when None)."""
    if value in _ENCODINGS_BACK:
        return _ENCODINGS_BACK[value]
    if value == kv_pb2.WIRE_ENCODING_UNSPECIFIED and default is not None:
        return default
    raise KVProtocolError(Reason.BAD_FRAME, f"wire encoding {value} is not one of none, fp8, int8")


def mode_from_pb(value: int, default: TransferMode | None = None) -> TransferMode:
    """TransferMode of a proto enum value; UNSPECIFIED gives `default` (an error when None)."""
    if value in _MODES_BACK:
        return _MODES_BACK[value]
    if value == kv_pb2.TRANSFER_MODE_UNSPECIFIED and default is not None:
        return default
    raise KVProtocolError(Reason.BAD_FRAME, f"transfer mode {value} is not one of layerwise, bulk")


def request_to_pb(request: KVRequest) -> kv_pb2.PrefillRequest:
    """The PrefillRequest message for `request`."""
    sampling = kv_pb2.SamplingParams(
        temperature=request.temperature, top_k=request.top_k, top_p=request.top_p
    )
    if request.seed is not None:
        sampling.seed = request.seed
    return kv_pb2.PrefillRequest(
        protocol_version=request.protocol_version,
        request_id=request.request_id,
        token_ids=request.token_ids,
        sampling=sampling,
        encoding=_ENCODINGS[request.encoding],
        mode=_MODES[request.mode],
        expected_fingerprint=request.expected_fingerprint,
        chunk_bytes=request.chunk_bytes,
        heartbeat_ms=request.heartbeat_ms,
        transfer_id=request.transfer_id,
        data_checksum_off=not request.data_checksum,
    )


def request_from_pb(message: kv_pb2.PrefillRequest, encoding: WireEncoding, mode: TransferMode) -> KVRequest:
    """KVRequest of a message; unspecified encoding/mode take the server's defaults given here."""
    sampling = message.sampling
    return KVRequest(
        token_ids=tuple(message.token_ids),
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p if sampling.HasField("top_p") else 1.0,
        seed=sampling.seed if sampling.HasField("seed") else None,
        encoding=encoding_from_pb(message.encoding, encoding),
        mode=mode_from_pb(message.mode, mode),
        expected_fingerprint=message.expected_fingerprint,
        chunk_bytes=message.chunk_bytes,
        request_id=message.request_id,
        protocol_version=message.protocol_version,
        heartbeat_ms=message.heartbeat_ms,
        transfer_id=message.transfer_id,
        data_checksum=not message.data_checksum_off,
    )


def frame_to_pb(frame: Frame | Heartbeat) -> kv_pb2.Frame:
    """The Frame message carrying `frame`."""
    if isinstance(frame, Heartbeat):
        return kv_pb2.Frame(heartbeat=kv_pb2.Heartbeat(queued_ahead=frame.queued_ahead))
    if isinstance(frame, LayerChunk):
        return kv_pb2.Frame(layer=_chunk_to_pb(frame))
    if isinstance(frame, Header):
        return kv_pb2.Frame(header=_header_to_pb(frame))
    return kv_pb2.Frame(trailer=_trailer_to_pb(frame))


def frame_from_pb(message: kv_pb2.Frame) -> Frame | Heartbeat:
    """The domain frame in `message`; KVProtocolError(BAD_FRAME) when it carries none or nonsense."""
    which = message.WhichOneof("kind")
    if which == "layer":
        return _chunk_from_pb(message.layer)
    if which == "header":
        return _header_from_pb(message.header)
    if which == "trailer":
        return _trailer_from_pb(message.trailer)
    if which == "heartbeat":
        return Heartbeat(message.heartbeat.queued_ahead)
    raise KVProtocolError(Reason.BAD_FRAME, "frame carries no header, layer chunk or trailer")


def _chunk_to_pb(chunk: LayerChunk) -> kv_pb2.LayerChunk:
    return kv_pb2.LayerChunk(
        layer=chunk.layer,
        kind=_KINDS[chunk.kind],
        offset=chunk.offset,
        crc32=chunk.crc32,
        scales=chunk.scales,
        data=bytes(chunk.data),
    )


def _chunk_from_pb(message: kv_pb2.LayerChunk) -> LayerChunk:
    if message.kind not in _KINDS_BACK:
        raise KVProtocolError(
            Reason.BAD_FRAME,
            f"layer {message.layer} chunk has tensor kind {message.kind}; use keys or values",
        )
    return LayerChunk(
        layer=message.layer,
        kind=_KINDS_BACK[message.kind],
        offset=message.offset,
        data=message.data,
        crc32=message.crc32,
        scales=message.scales,
    )


def _header_to_pb(header: Header) -> kv_pb2.Header:
    layers = [
        kv_pb2.LayerSpec(keys_shape=k, values_shape=v)
        for k, v in zip(header.keys_shapes, header.values_shapes, strict=True)
    ]
    return kv_pb2.Header(
        protocol_version=header.protocol_version,
        request_id=header.request_id,
        model_fingerprint=header.model_fingerprint,
        model_name=header.model_name,
        num_layers=header.num_layers,
        layers=layers,
        dtype=header.dtype,
        encoding=_ENCODINGS[header.encoding],
        mode=_MODES[header.mode],
        chunk_bytes=header.chunk_bytes,
        prompt_tokens=header.prompt_tokens,
        data_connection=header.data_connection,
        data_host=header.data_host,
        data_port=header.data_port,
    )


def _header_from_pb(message: kv_pb2.Header) -> Header:
    return Header(
        protocol_version=message.protocol_version,
        request_id=message.request_id,
        model_fingerprint=message.model_fingerprint,
        model_name=message.model_name,
        num_layers=message.num_layers,
        keys_shapes=tuple(tuple(spec.keys_shape) for spec in message.layers),
        values_shapes=tuple(tuple(spec.values_shape) for spec in message.layers),
        dtype=message.dtype,
        encoding=encoding_from_pb(message.encoding),
        mode=mode_from_pb(message.mode),
        chunk_bytes=message.chunk_bytes,
        prompt_tokens=message.prompt_tokens,
        data_connection=message.data_connection,
        data_host=message.data_host,
        data_port=message.data_port,
    )


def _trailer_to_pb(trailer: Trailer) -> kv_pb2.Trailer:
    return kv_pb2.Trailer(
        first_token=trailer.first_token,
        first_logprob=trailer.first_logprob,
        layer_seconds=trailer.layer_seconds,
        layer_done_seconds=trailer.layer_done_seconds,
        queue_seconds=trailer.queue_seconds,
        prefill_seconds=trailer.prefill_seconds,
        prefill_start_unix=trailer.prefill_start_unix,
        prefill_end_unix=trailer.prefill_end_unix,
        send_tail_seconds=trailer.send_tail_seconds,
        layer_send_seconds=trailer.layer_send_seconds,
    )


def _trailer_from_pb(message: kv_pb2.Trailer) -> Trailer:
    return Trailer(
        first_token=message.first_token,
        first_logprob=message.first_logprob,
        layer_seconds=tuple(message.layer_seconds),
        layer_done_seconds=tuple(message.layer_done_seconds),
        queue_seconds=message.queue_seconds,
        prefill_seconds=message.prefill_seconds,
        prefill_start_unix=message.prefill_start_unix,
        prefill_end_unix=message.prefill_end_unix,
        send_tail_seconds=message.send_tail_seconds,
        layer_send_seconds=tuple(message.layer_send_seconds),
    )
