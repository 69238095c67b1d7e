"""The KV wire: frames and their validation, wire compression, protobuf conversion (docs/kv-wire.md).

- frames.py       domain types (KVRequest, Header, LayerChunk, Trailer), limits, the checksum
- errors.py       KVProtocolError and its Reason
- convert.py      protobuf <-> domain types (the gRPC edge)
- wire.py         serialized frames: layer chunks written with one copy, read without copying
- chunker.py      sender side: a layer's keys/values -> checksummed chunks; the Header
- compression.py  none / fp8 / int8 (per-head scales) encodings of one tensor
- checks.py       Header and Trailer validation against the request and the receiving model
- receiver.py     KVReceiver: the receiving state machine, layer by layer
- data_frame.py   the data connection's framing (hello, one header + payload per layer, gather send)
- data_receiver.py  data connection: each layer recv_into the KV slot, validated like the frames
- tls.py          TLS / mTLS credentials (gRPC) and SSL contexts (data connection) from PEM files
- proto/          generated stubs (built on first import)

This package knows nothing about gRPC servers or the engine: `prefill/` sends with `chunker`, and
`decode/prefill_client.py` receives with `receiver`.
"""

from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.frames import (
    DEFAULT_CHUNK_BYTES,
    PROTOCOL_VERSION,
    Header,
    KVRequest,
    LayerChunk,
    TensorKind,
    Trailer,
)

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "PROTOCOL_VERSION",
    "Header",
    "KVProtocolError",
    "KVRequest",
    "LayerChunk",
    "Reason",
    "TensorKind",
    "Trailer",
]
