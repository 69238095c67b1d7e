"""The PrefillWorker gRPC service: Prefill (Header, layer chunks, Trailer), Info, Handshake."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc

from hybrid_workers import metrics
from hybrid_workers.engine import LoadedModel, SamplingParams
from hybrid_workers.engine.prefill import check_token_ids
from hybrid_workers.enums import TransferMode
from hybrid_workers.errors import UserError
from hybrid_workers.kv import handshake, wire
from hybrid_workers.kv.chunker import build_header, layer_chunks
from hybrid_workers.kv.convert import request_from_pb
from hybrid_workers.kv.data_frame import DATA_VERSION, TRANSFER_ID_BYTES, negotiate
from hybrid_workers.kv.errors import REASON_METADATA, KVProtocolError, Reason
from hybrid_workers.kv.frames import (
    PROTOCOL_VERSION,
    Frame,
    Heartbeat,
    KVRequest,
    check_chunk_bytes,
)
from hybrid_workers.kv.proto import kv_pb2, kv_pb2_grpc
from hybrid_workers.prefill.config import PrefillServerConfig
from hybrid_workers.prefill.data_listener import DataListener
from hybrid_workers.prefill.data_sender import DataSender
from hybrid_workers.prefill.job import PrefillJob
from hybrid_workers.prefill.pipe import Cancelled, Item, LayerPipe, LayerReady, PrefillDone
from hybrid_workers.torch_dtypes import dtype_name

log = logging.getLogger("hybrid_inference.prefill")
# Heartbeats go out at most this often, whatever a request asks.
MIN_HEARTBEAT_MS = 50


class PrefillServicer(kv_pb2_grpc.PrefillWorkerServicer):
    """Serves one loaded model; prefills run one at a time on a single compute thread (the lane)."""

    def __init__(
        self, lm: LoadedModel, config: PrefillServerConfig, data: DataListener | None = None
    ) -> None:
        self.lm = lm
        self.config = config
        self.data = data  # the KV data port; None: layers travel as gRPC frames only
        self._lane = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="prefill-lane",
            initializer=_pin,
            initargs=(config.compute_cpus,),
        )
        self._lock = threading.Lock()
        self._pending = 0  # requests admitted and not finished
        metrics.export_build_info(self.model_label, "prefill")

    def Prefill(
        self, request: kv_pb2.PrefillRequest, context: grpc.ServicerContext
    ) -> Iterator[Frame | Heartbeat | bytes]:
        """Validate, queue the prefill on the lane, and stream its frames as layers finish."""
        arrival = time.perf_counter()
        kv_request, params = self._admit(request, context)
        pipe = LayerPipe(0 if kv_request.mode is TransferMode.BULK else self.config.pipe_layers)
        context.add_callback(pipe.cancel)  # fires when the RPC ends for any reason, e.g. the client left
        try:
            self._lane.submit(PrefillJob(self.lm, kv_request, params, pipe, arrival).run)
            yield from self._stream(kv_request, pipe, context)
        except Cancelled:
            log.info("request %s: client went away, prefill stopped", kv_request.request_id or "-")
        finally:
            pipe.cancel()  # stops the compute thread if the stream ended early; frees its layers
            with self._lock:
                self._pending -= 1

    @property
    def pending(self) -> int:
        """Prefills admitted and not finished (queued or running)."""
        return self._pending

    def Handshake(
        self, request: kv_pb2.HandshakeRequest, context: grpc.ServicerContext
    ) -> kv_pb2.HandshakeReply:
        """This worker's side and its verdict on the caller's (wire version, model identity, dtype)."""
        ours = handshake.Side.of(self.lm)
        reply = handshake.reply_pb(ours, handshake.side_from_request(request), self.lm.num_layers)
        if self.data is not None:
            # the caller's version when older (a release that compares for equality keeps working)
            reply.data_version = negotiate(request.data_version) or DATA_VERSION
            reply.data_port = self.data.port
        if not reply.compatible:
            log.warning("handshake refused (%s): %s", reply.reason, reply.detail)
        return reply

    def Info(self, request: kv_pb2.InfoRequest, context: grpc.ServicerContext) -> kv_pb2.InfoReply:
        """What this worker serves."""
        lm = self.lm
        return kv_pb2.InfoReply(
            model_name=lm.name,
            model_fingerprint=lm.fingerprint,
            dtype=dtype_name(lm.dtype),
            device=str(lm.device),
            num_layers=lm.num_layers,
            num_kv_heads=lm.num_kv_heads,
            head_dim=lm.head_dim,
            protocol_version=PROTOCOL_VERSION,
            default_chunk_bytes=self.config.chunk_bytes,
            max_context=lm.max_context,
        )

    def close(self) -> None:
        """Stop the compute lane after the running prefill (queued ones see their pipe cancelled)."""
        self._lane.shutdown(wait=False, cancel_futures=True)

    def _admit(
        self, message: kv_pb2.PrefillRequest, context: grpc.ServicerContext
    ) -> tuple[KVRequest, SamplingParams]:
        """Parse and validate the request and take a queue slot, or abort the RPC with the reason."""
        try:
            request, params = self._parse(message)
        except (UserError, ValueError, KVProtocolError) as exc:
            if isinstance(exc, KVProtocolError):  # the client raises the same reason
                context.set_trailing_metadata(((REASON_METADATA, exc.reason.value),))
            context.abort(_status_of(exc), str(exc))
        with self._lock:
            if self._pending >= self.config.max_queue:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{self._pending} prefills already queued (limit {self.config.max_queue}); retry later",
                )
            self._pending += 1
        return request, params

    def _parse(self, message: kv_pb2.PrefillRequest) -> tuple[KVRequest, SamplingParams]:
        request = request_from_pb(message, self.config.encoding, self.config.mode)
        if request.protocol_version != PROTOCOL_VERSION:
            raise KVProtocolError(
                Reason.VERSION,
                f"request speaks protocol {request.protocol_version}, this worker {PROTOCOL_VERSION}",
            )
        if request.expected_fingerprint and request.expected_fingerprint != self.lm.fingerprint:
            raise KVProtocolError(
                Reason.FINGERPRINT,
                f"decode worker runs model identity {request.expected_fingerprint}, this prefill worker "
                f"serves {self.lm.name!r} {dtype_name(self.lm.dtype)}, model identity {self.lm.fingerprint}; "
                "give both workers the same model files",
            )
        chunk_bytes = check_chunk_bytes(request.chunk_bytes or self.config.chunk_bytes)
        if request.transfer_id and len(request.transfer_id) != TRANSFER_ID_BYTES:
            raise ValueError(
                f"transfer id of {len(request.transfer_id)} bytes; use {TRANSFER_ID_BYTES} bytes, or none"
            )
        check_token_ids(self.lm, request.token_ids)
        params = SamplingParams(
            max_tokens=1,
            temperature=request.temperature,
            top_k=request.top_k,
            top_p=request.top_p,
            seed=request.seed,
        )
        return dataclasses.replace(request, chunk_bytes=chunk_bytes), params

    @property
    def model_label(self) -> str:
        """The `model` label of this worker's metrics: the served name both workers share."""
        return self.config.served_model_name or self.lm.name

    def _stream(
        self, request: KVRequest, pipe: LayerPipe, context: grpc.ServicerContext
    ) -> Iterator[Frame | Heartbeat | bytes]:
        model = self.model_label
        data = (
            DataSender(self.data, request, context, self.model_label)
            if request.transfer_id and self.data
            else None
        )
        header = build_header(
            request,
            model_name=self.lm.name,
            fingerprint=self.lm.fingerprint,
            num_layers=self.lm.num_layers,
            layer_shape=(1, self.lm.num_kv_heads, len(request.token_ids), self.lm.head_dim),
            dtype=dtype_name(self.lm.dtype),
            chunk_bytes=request.chunk_bytes,
        )
        if data is not None:  # the decode worker opens it to this replica on seeing the header
            header = dataclasses.replace(
                header, data_connection=True, data_host=self.config.data_host, data_port=data.listener.port
            )
        yield header
        metrics.kv_frames_sent_total.labels(model).inc()
        beat_s = max(request.heartbeat_ms, MIN_HEARTBEAT_MS) / 1000 if request.heartbeat_ms else None
        send_s: list[float] = []  # per layer: first byte handed over -> last byte accepted
        backlog: deque[Item] = deque()  # taken from the pipe, not yet handled
        try:
            while True:
                item = backlog.popleft() if backlog else pipe.get(beat_s)
                if item is None:  # nothing to send for a while: a sign of life instead
                    yield Heartbeat(queued_ahead=max(0, self._pending - 1))
                elif isinstance(item, LayerReady) and data is not None:
                    yield from data.connect(self.config.data_connect_timeout_s, beat_s or 1.0)
                    backlog.extend(pipe.ready())  # every layer final by now goes in the same write
                    batch = [item]
                    while backlog and isinstance(backlog[0], LayerReady):
                        batch.append(backlog.popleft())  # type: ignore[arg-type]  # checked just above
                    send_s.extend(data.send(batch))
                elif isinstance(item, LayerReady):
                    started = time.perf_counter()
                    yield from self._layer_frames(item, request)
                    send_s.append(time.perf_counter() - started)
                elif isinstance(item, PrefillDone):
                    tail = time.perf_counter() - item.last_layer_done
                    yield dataclasses.replace(
                        item.trailer, send_tail_seconds=tail, layer_send_seconds=tuple(send_s)
                    )
                    self._count_done(item, request, data is not None)
                    return
                else:
                    log.error("request %s: prefill failed: %s", request.request_id or "-", item.error)
                    # This request's failure, not the worker's: the client counts an `error` fallback
                    # and keeps sending other requests here.
                    context.set_trailing_metadata(((REASON_METADATA, Reason.REJECTED.value),))
                    context.abort(_status_of(item.error), f"prefill failed: {item.error}")
        finally:
            if data is not None:
                data.close()

    def _count_done(self, item: PrefillDone, request: KVRequest, tcp: bool) -> None:
        model, trailer = self.model_label, item.trailer
        metrics.kv_frames_sent_total.labels(model).inc()
        metrics.prefill_seconds.labels(model).observe(trailer.prefill_seconds)
        metrics.prefill_queue_seconds.labels(model).observe(trailer.queue_seconds)
        metrics.prefill_tokens_total.labels(model).inc(len(request.token_ids))
        labels = (model, request.mode.value, "tcp" if tcp else "grpc")
        metrics.prefill_compute_seconds.labels(*labels).observe(trailer.prefill_seconds)
        metrics.prefill_compute_tokens_total.labels(*labels).inc(len(request.token_ids))

    def _layer_frames(self, item: LayerReady, request: KVRequest) -> Iterator[bytes]:
        model = self.model_label
        for chunk in layer_chunks(item.index, item.keys, item.values, request.encoding, request.chunk_bytes):
            yield wire.encode_chunk(chunk)  # serialized here: the one copy of the tensor bytes
            metrics.kv_frames_sent_total.labels(model).inc()
            metrics.kv_send_bytes_total.labels(model).inc(len(chunk.data) + len(chunk.scales))


def _pin(cpus: tuple[int, ...]) -> None:
    """Pin the calling thread (the compute lane) to `cpus` (Linux; elsewhere a no-op)."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def _status_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC status a failure maps to: the caller's fault, a model mismatch, or ours."""
    if isinstance(error, KVProtocolError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(error, UserError | ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


SERVICE_NAME = "hybridinference.kv.v1.PrefillWorker"


def add_to_server(servicer: PrefillServicer, server: grpc.Server) -> None:
    """Register the service. Unlike the generated helper, Prefill's frames are serialized by kv.wire
    (one copy of the tensor bytes per layer chunk); Info and Handshake use the generated messages."""
    handlers = {
        "Prefill": grpc.unary_stream_rpc_method_handler(
            servicer.Prefill,
            request_deserializer=kv_pb2.PrefillRequest.FromString,
            response_serializer=wire.serialize,
        ),
        "Info": grpc.unary_unary_rpc_method_handler(
            servicer.Info,
            request_deserializer=kv_pb2.InfoRequest.FromString,
            response_serializer=kv_pb2.InfoReply.SerializeToString,
        ),
        "Handshake": grpc.unary_unary_rpc_method_handler(
            servicer.Handshake,
            request_deserializer=kv_pb2.HandshakeRequest.FromString,
            response_serializer=kv_pb2.HandshakeReply.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
