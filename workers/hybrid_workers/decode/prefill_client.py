"""PrefillClient: the decode worker's side of the KV transfer (remote prefill over gRPC).

It sends the prompt, validates every frame with kv.receiver.KVReceiver, puts each complete layer
into an engine CacheBuilder as it arrives, and returns the cache with the first token and timings.
Every failure - a frame that breaks the protocol, a lost connection, a timeout, a refusal - raises
KVProtocolError; the partial cache is dropped with the call. A transfer that makes no progress (no
frame, not even a heartbeat, for `stall_s`) is cancelled as STALLED, long before the total deadline;
a request whose client went away (its `cancel` event set) cancels the call at once and raises
PrefillCancelled. `probe()` (grpc.health.v1 + Handshake) tells whether the worker is up and compatible.

Exposed transfer, without comparing the two hosts' clocks: the decode side measures
`t_kv` = request sent -> last KV chunk received (its clock); the prefill side reports
`d_done` = request arrived -> last layer final (its clock). exposed = t_kv - d_done. Both are
durations, so clock offsets cancel; the request's one-way network latency stays in, so the value is
an upper bound (conservative) by that latency (a small request: one RTT/2).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybrid_workers.decode.data_link import (
    StreamDrain,
    announced,
    offered,
    open_data,
    reachable,
    target_host,
)
from hybrid_workers.decode.engine_api import KVSlot
from hybrid_workers.decode.transfer_clock import TransferClock, TransferTimings
from hybrid_workers.decode.transfer_watch import TransferWatch
from hybrid_workers.engine import CacheBuilder, LoadedModel, SamplingParams
from hybrid_workers.enums import DataChecksum, TransferMode, WireEncoding
from hybrid_workers.errors import closed_choice
from hybrid_workers.kv import handshake, wire
from hybrid_workers.kv.checks import ReceiverModel
from hybrid_workers.kv.convert import request_to_pb
from hybrid_workers.kv.data_frame import DATA_VERSION, TRANSFER_ID_BYTES, negotiate, transfer_ref
from hybrid_workers.kv.data_receiver import receive_layers
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.frames import (
    Header,
    Heartbeat,
    KVRequest,
    Trailer,
)
from hybrid_workers.kv.handshake import Verdict
from hybrid_workers.kv.keepalive import CHANNEL_OPTIONS
from hybrid_workers.kv.proto import kv_pb2, kv_pb2_grpc
from hybrid_workers.kv.receiver import KVReceiver
from hybrid_workers.kv.tls import TLSConfig, channel_credentials
from hybrid_workers.prefill.servicer import REASON_METADATA, SERVICE_NAME

if TYPE_CHECKING:
    from transformers import DynamicCache
log = logging.getLogger("hybrid_inference.decode")
# How long a call that failed on its data connection may take to report the prefill worker's status.
_STATUS_WAIT_S = 1.0


@dataclass(frozen=True)
class RemotePrefill:
    """A prompt prefilled remotely: its KV where it landed, the first token (step 0) and the costs.

    The one shape of a remote prefill's result, from the client through routing to the request's stats.
    """

    cache: KVSlot | DynamicCache  # the slot the layers landed in, or a new DynamicCache (no slot given)
    first_token: int
    first_logprob: float
    timings: TransferTimings
    trailer: Trailer


@dataclass(frozen=True)
class WorkerInfo:
    """What a prefill worker serves (its Info reply)."""

    model_name: str
    fingerprint: str
    dtype: str
    device: str
    num_layers: int
    protocol_version: int
    default_chunk_bytes: int


class PrefillClient:
    """A channel to one prefill worker, for a decode worker running `lm`; thread-safe, reusable."""

    def __init__(
        self,
        target: str,
        lm: LoadedModel,
        *,
        tls: TLSConfig | None = None,
        timeout_s: float = 60.0,
        stall_s: float = 5.0,
        encoding: WireEncoding | str = WireEncoding.NONE,
        mode: TransferMode | str = TransferMode.LAYERWISE,
        chunk_bytes: int = 0,
        data_connection: bool = True,
        data_port: int | None = None,
        data_checksum: DataChecksum | str = DataChecksum.AUTO,
    ) -> None:
        """`data_connection`: use the prefill worker's data port when it offers one (False: gRPC frames
        only); `data_port`: connect there instead of the offered port (a NAT or NodePort mapping);
        `data_checksum`: crc32 of each layer on the data connection (auto: on unless TLS)."""
        self.target = target
        self.tls = tls
        self.data_connection = data_connection
        self.data_port = data_port
        checksum = closed_choice("--kv-data-checksum", DataChecksum, data_checksum)
        self.data_checksum = checksum is DataChecksum.ON or (checksum is DataChecksum.AUTO and tls is None)
        self._data_ok = False  # the last handshake offered a data connection that opens from here
        self._data_version = DATA_VERSION  # the data version both sides speak (the last handshake's)
        self._negotiated = False
        self.lm = lm
        self.timeout_s = timeout_s
        self.stall_s = stall_s
        self.encoding = closed_choice("--kv-compression", WireEncoding, encoding)
        self.mode = closed_choice("mode", TransferMode, mode)
        self.chunk_bytes = chunk_bytes
        self._model = ReceiverModel.of(lm)
        self.side = handshake.Side.of(lm)
        if tls is None:
            self._channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.secure_channel(target, channel_credentials(tls), options=CHANNEL_OPTIONS)
        self._stub = kv_pb2_grpc.PrefillWorkerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        # Prefill's frames arrive as raw bytes: kv.wire reads layer chunks without copying their data
        self._prefill = self._channel.unary_stream(
            f"/{SERVICE_NAME}/Prefill",
            request_serializer=kv_pb2.PrefillRequest.SerializeToString,
            response_deserializer=None,  # raw bytes
        )

    def prefill(
        self,
        token_ids: Sequence[int],
        params: SamplingParams,
        slot: KVSlot | None = None,
        cancel: threading.Event | None = None,
    ) -> RemotePrefill:
        """Prefill `token_ids` remotely, sampling the first token with `params` (step 0).

        Each layer lands in `slot` as it completes (the decode worker's batch path); without a slot
        the layers are assembled into a new DynamicCache. Blocks until the trailer arrived (call from
        a worker thread). Raises KVProtocolError, or PrefillCancelled once `cancel` is set (the gRPC
        call is cancelled at once).
        """
        transfer_id = os.urandom(TRANSFER_ID_BYTES) if self._data_wanted() else b""
        request = self._request(token_ids, params, transfer_id)
        builder = CacheBuilder(self.lm)
        clock = TransferClock(self.lm.num_layers)

        def sink(index: int, keys: torch.Tensor, values: torch.Tensor) -> None:
            clock.layer_received(index)
            if slot is None:  # with a slot, the receiver already wrote the layer into it
                builder.add_layer(index, keys.to(self.lm.device), values.to(self.lm.device))

        receiver = KVReceiver(self._model, request, sink, destination=slot)
        call = self._prefill(request_to_pb(request), timeout=self.timeout_s)
        watch = TransferWatch(call, self.stall_s, cancel)

        def poll(count: int) -> None:  # the data connection's progress; raises to give up
            if count:
                watch.progress()
                clock.bytes_received()
            if watch.stalled or watch.cancelled:
                raise watch.failure(KVProtocolError(Reason.TRANSPORT, "cancelled"), self.target)
            if call.done() and call.code() is not grpc.StatusCode.OK:
                raise rpc_failure(call, self.target)  # type: ignore[arg-type]  # a failed call is an RpcError

        sock = None
        try:
            stream: Iterator[bytes] = iter(call)
            while (message := next(stream, None)) is not None:
                watch.progress()
                frame = wire.parse(message)
                if isinstance(frame, Heartbeat):
                    continue
                clock.frame_received(frame)
                receiver.feed(frame)
                if isinstance(frame, Header) and frame.data_connection:  # (asked for: check_header)
                    sock = self._open_data(frame, transfer_id)
                    stream = StreamDrain(stream, watch.progress)  # heartbeats count while layers arrive
                    ref, version = transfer_ref(transfer_id), self._data_version
                    receiving = receive_layers(sock, receiver, ref, poll, version)
                    clock.receive_seconds = receiving
            trailer = receiver.finish()
        except grpc.RpcError as exc:
            receiver.release()
            raise watch.failure(rpc_failure(exc, self.target), self.target) from None
        except KVProtocolError as exc:
            error = _status_first(exc, call, self.target)  # before cancelling: it may explain the error
            call.cancel()  # the prefill worker stops computing for us
            receiver.release()
            raise error from None
        finally:
            watch.stop()
            if sock is not None:
                sock.close()
        clock.done()
        return RemotePrefill(
            cache=slot if slot is not None else builder.build(),
            first_token=trailer.first_token,
            first_logprob=trailer.first_logprob,
            timings=clock.timings(trailer, receiver.wire_bytes),
            trailer=trailer,
        )

    def handshake(self, timeout_s: float = 2.0) -> Verdict:
        """The worker's side and our verdict on it; KVProtocolError when it cannot be asked.

        Also negotiates the data connection: used from now on when the worker offers one and its
        port opens from here; otherwise layers come as gRPC frames (logged once per change).
        """
        try:
            reply = self._stub.Handshake(handshake.request_pb(self.side), timeout=timeout_s)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                raise KVProtocolError(
                    Reason.VERSION,
                    f"prefill worker {self.target} has no Handshake (an older release, KV wire version 1); "
                    "run the same hybrid-inference release on both workers",
                ) from None
            raise rpc_failure(exc, self.target) from None
        verdict = handshake.verdict_from_reply(self.side, reply, self.target)
        self._negotiate(reply, timeout_s)
        return verdict

    def _negotiate(self, reply: kv_pb2.HandshakeReply, timeout_s: float) -> None:
        address = offered(self.target, reply.data_version, reply.data_port, self.data_port)
        ok = address is not None and self.data_connection
        if address is not None and ok:
            problem = reachable(address, timeout_s)
            if problem is not None:
                log.warning(
                    "prefill worker %s offers a KV data connection at %s, which does not open from here "
                    "(%s): KV travels as gRPC frames; open that port, or set --prefill-data-port",
                    self.target,
                    address,
                    problem,
                )
                ok = False
        version = negotiate(reply.data_version)
        if ok != self._data_ok or (ok and version != self._data_version):
            where = f"{address} (data version {version})" if ok else "gRPC frames"
            log.info("prefill worker %s: KV over %s", self.target, where)
        self._data_ok, self._negotiated = ok, True
        self._data_version = version or DATA_VERSION

    def _data_wanted(self) -> bool:
        """Whether to ask for a data connection (the first call handshakes once to find out)."""
        if self.data_connection and not self._negotiated:
            try:
                self.handshake()
            except KVProtocolError:
                self._negotiated = True  # the Prefill call will report what is wrong
        return self.data_connection and self._data_ok

    def _open_data(self, header: Header, transfer_id: bytes):  # -> socket.socket
        """The data connection the header announced; on failure, gRPC frames until the next handshake."""
        address = announced(self.target, header.data_host, header.data_port, self.data_port)
        try:
            host = target_host(self.target)
            return open_data(address, transfer_id, self.tls, self.stall_s, host, self._data_version)
        except KVProtocolError:
            self._data_ok = False
            log.warning("prefill worker %s: KV over gRPC frames until the next handshake", self.target)
            raise

    def probe(self, timeout_s: float = 2.0) -> Verdict:
        """grpc.health.v1 says SERVING, then the handshake; KVProtocolError when down or not serving."""
        self.health(timeout_s)
        return self.handshake(timeout_s)

    def health(self, timeout_s: float = 2.0) -> None:
        """Raises KVProtocolError (transport) unless the worker's grpc.health.v1 service says SERVING."""
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        try:
            status = self._health.Check(request, timeout=timeout_s).status
        except grpc.RpcError as exc:
            raise rpc_failure(exc, self.target) from None
        if status != health_pb2.HealthCheckResponse.SERVING:
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            raise KVProtocolError(Reason.TRANSPORT, f"prefill worker {self.target} is {name}")

    def info(self, timeout_s: float = 5.0) -> WorkerInfo:
        """The worker's model, fingerprint, dtype, device and layer count."""
        try:
            reply = self._stub.Info(kv_pb2.InfoRequest(), timeout=timeout_s)
        except grpc.RpcError as exc:
            raise rpc_failure(exc, self.target) from None
        return WorkerInfo(
            model_name=reply.model_name,
            fingerprint=reply.model_fingerprint,
            dtype=reply.dtype,
            device=reply.device,
            num_layers=reply.num_layers,
            protocol_version=reply.protocol_version,
            default_chunk_bytes=reply.default_chunk_bytes,
        )

    def close(self) -> None:
        """Close the channel (pending calls are cancelled)."""
        self._channel.close()

    def __enter__(self) -> PrefillClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, token_ids: Sequence[int], params: SamplingParams, transfer_id: bytes) -> KVRequest:
        return KVRequest(
            token_ids=tuple(int(t) for t in token_ids),
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            seed=params.seed,
            encoding=self.encoding,
            mode=self.mode,
            expected_fingerprint=self.lm.fingerprint,
            chunk_bytes=self.chunk_bytes,
            request_id=uuid.uuid4().hex[:16],
            heartbeat_ms=max(1, int(self.stall_s * 1000 / 4)),
            transfer_id=transfer_id,
            data_checksum=self.data_checksum,
        )


def _status_first(error: KVProtocolError, call: grpc.Future, target: str) -> Exception:
    """A data-connection failure may be the prefill worker's own failure (it closed the connection
    and ended the call with a status): that status explains it better, when it comes promptly."""
    if error.reason not in (Reason.TRUNCATED_CHUNK, Reason.TRANSPORT):
        return error
    deadline = time.monotonic() + _STATUS_WAIT_S
    while not call.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    if call.done() and call.code() not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
        return rpc_failure(call, target)  # type: ignore[arg-type]  # a failed call is an RpcError
    return error


def rpc_failure(error: grpc.RpcError, target: str) -> KVProtocolError:
    """The KVProtocolError for a failed gRPC call (status code -> Reason)."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else str(error)) or code.name
    reason = _refusal_reason(error)
    if reason is not None:
        return KVProtocolError(reason, f"prefill worker {target} refused: {details}")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return KVProtocolError(Reason.TIMEOUT, f"prefill worker {target} did not finish in time: {details}")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        return KVProtocolError(
            Reason.OVERSIZE_FRAME, f"prefill worker {target} sent an oversize frame: {details}"
        )
    if code is grpc.StatusCode.INTERNAL and "deserializ" in details.lower():
        return KVProtocolError(
            Reason.BAD_FRAME, f"prefill worker {target} sent an undecodable frame: {details}"
        )
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED):
        return KVProtocolError(Reason.TRANSPORT, f"prefill worker {target} unreachable or lost: {details}")
    return KVProtocolError(Reason.REJECTED, f"prefill worker {target} refused ({code.name}): {details}")


def _refusal_reason(error: grpc.RpcError) -> Reason | None:
    """The Reason a prefill worker attached to a refusal (version or fingerprint mismatch), if any."""
    metadata: tuple[tuple[str, str], ...] = (
        (error.trailing_metadata() or ()) if isinstance(error, grpc.Call) else ()
    )
    values = [value for key, value in metadata if key == REASON_METADATA]
    return Reason(values[0]) if values and values[0] in {r.value for r in Reason} else None
