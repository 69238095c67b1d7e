"""The compatibility handshake: wire version, model identity and dtype, judged the same way on both sides.

The decode worker sends what it runs (`Side`) at start and on every reconnect; the prefill worker
answers with its own `Side` and its verdict. The decode worker judges again with `mismatch()` (it
trusts no verdict but its own) and sends no work to an incompatible peer: its /ready then says
`incompatible` with the message below, which names both sides' values and the fix.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from hybrid_workers.kv.data_frame import DATA_VERSION
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.frames import PROTOCOL_VERSION
from hybrid_workers.kv.proto import kv_pb2

# New at every start of this process: a peer that sees it change knows the worker restarted.
INSTANCE_ID = uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Side:
    """What one worker runs, as far as KV compatibility goes."""

    model_identity: str  # model_identity.model_identity() of its folder
    model_name: str  # for messages
    dtype: str  # float32 | bfloat16 | float16
    wire_version: int = PROTOCOL_VERSION

    @classmethod
    def of(cls, lm: object) -> Side:
        """From a loaded model (duck-typed: fingerprint, name, dtype)."""
        from hybrid_workers.torch_dtypes import dtype_name

        return cls(lm.fingerprint, lm.name, dtype_name(lm.dtype))  # type: ignore[attr-defined]

    def describe(self) -> str:
        """`'demo-tiny' float32, identity 3f2a…` (for messages)."""
        return f"{self.model_name!r} {self.dtype}, model identity {self.model_identity}"


@dataclass(frozen=True)
class Verdict:
    """The prefill worker's answer: its side, its instance and whether it takes our work."""

    peer: Side
    instance_id: str
    num_layers: int
    problem: KVProtocolError | None  # None: compatible


def mismatch(ours: Side, theirs: Side, *, peer: str = "the prefill worker") -> KVProtocolError | None:
    """Why `theirs` cannot exchange KV with `ours` (VERSION, FINGERPRINT or DTYPE), or None."""
    if ours.wire_version != theirs.wire_version:
        return KVProtocolError(
            Reason.VERSION,
            f"{peer} speaks KV wire version {theirs.wire_version}, this side {ours.wire_version}; "
            "run the same hybrid-inference release on both workers",
        )
    if ours.model_identity != theirs.model_identity:
        return KVProtocolError(
            Reason.FINGERPRINT,
            f"{peer} runs {theirs.describe()}, this side runs {ours.describe()}; "
            "give both workers the same model files (a copy of the same folder)",
        )
    if ours.dtype != theirs.dtype:
        return KVProtocolError(
            Reason.DTYPE,
            f"{peer} computes in {theirs.dtype}, this side in {ours.dtype} (model identity "
            f"{ours.model_identity}); give both workers the same --dtype",
        )
    return None


def request_pb(side: Side) -> kv_pb2.HandshakeRequest:
    """The HandshakeRequest carrying `side`."""
    return kv_pb2.HandshakeRequest(
        wire_version=side.wire_version,
        model_identity=side.model_identity,
        model_name=side.model_name,
        dtype=side.dtype,
        data_version=DATA_VERSION,
    )


def side_from_request(message: kv_pb2.HandshakeRequest) -> Side:
    """The caller's side from its HandshakeRequest."""
    return Side(message.model_identity, message.model_name, message.dtype, message.wire_version)


def reply_pb(ours: Side, caller: Side, num_layers: int) -> kv_pb2.HandshakeReply:
    """The prefill worker's answer to `caller`: its own side and its verdict."""
    problem = mismatch(ours, caller, peer="the decode worker")
    return kv_pb2.HandshakeReply(
        compatible=problem is None,
        reason="" if problem is None else problem.reason.value,
        detail="" if problem is None else problem.detail,
        wire_version=ours.wire_version,
        model_identity=ours.model_identity,
        model_name=ours.model_name,
        dtype=ours.dtype,
        instance_id=INSTANCE_ID,
        num_layers=num_layers,
    )


def verdict_from_reply(ours: Side, reply: kv_pb2.HandshakeReply, target: str) -> Verdict:
    """Our own judgement of the prefill worker at `target` from its reply."""
    theirs = Side(reply.model_identity, reply.model_name, reply.dtype, reply.wire_version)
    problem = mismatch(ours, theirs, peer=f"prefill worker {target}")
    if problem is None and not reply.compatible:  # it refuses for a reason this side does not know
        problem = KVProtocolError(Reason.REJECTED, f"prefill worker {target} refused: {reply.detail}")
    return Verdict(theirs, reply.instance_id, reply.num_layers, problem)
