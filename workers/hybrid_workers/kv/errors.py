"""KVProtocolError: every way a KV transfer can fail, each with its own reason."""

from __future__ import annotations

from enum import StrEnum

# gRPC trailing metadata key carrying a Reason with a prefill worker's refusal (the client raises it).
REASON_METADATA = "kv-reason"


class Reason(StrEnum):
    """Why a KV transfer was aborted; the decode worker may fall back to a local prefill on any of them."""

    VERSION = "version"  # the peer speaks another protocol version
    FINGERPRINT = "fingerprint"  # another model identity (weight, config or tokenizer files differ)
    DTYPE = "dtype"  # the same model computed in another dtype
    BAD_HEADER = "bad-header"  # header inconsistent with the request or the local model
    BAD_FRAME = "bad-frame"  # a frame that is malformed in itself (unknown kind, undecodable)
    ORDER = "order"  # a frame out of the protocol's order
    MISSING_LAYER = "missing-layer"  # a layer skipped, or the trailer before all layers
    DUPLICATE_LAYER = "duplicate-layer"  # a complete layer (or tensor) sent again
    TRUNCATED_CHUNK = "truncated-chunk"  # a chunk shorter than its place in the tensor requires
    OVERSIZE_FRAME = "oversize-frame"  # a chunk longer than the chunk size or the tensor's end
    CHECKSUM = "checksum"  # crc32 mismatch
    BAD_SCALES = "bad-scales"  # compression scales missing, misplaced, wrong length or not finite
    BAD_TRAILER = "bad-trailer"  # first token / logprob / timings invalid
    TRAILING_DATA = "trailing-data"  # a frame after the trailer
    STREAM_ENDED = "stream-ended"  # the peer closed the stream before the trailer
    TRANSPORT = "transport"  # connection refused, reset or lost (e.g. the prefill process died)
    TIMEOUT = "timeout"  # the deadline passed
    STALLED = "stalled"  # no frame (not even a heartbeat) for the stall limit: the peer hangs
    REJECTED = "rejected"  # the prefill worker refused the request (status and message attached)


class KVProtocolError(Exception):
    """A KV transfer failed; `reason` says how, the message says what exactly (with values).

    Raised by the receiver for anything a peer sends that breaks the protocol, and by the client for
    transport failures, so a caller needs to catch only this type.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"KV transfer failed ({reason.value}): {message}")
        self.reason = reason
        self.detail = message


class PrefillCancelled(Exception):
    """The request was cancelled during its remote prefill (its client went away): nothing failed."""
