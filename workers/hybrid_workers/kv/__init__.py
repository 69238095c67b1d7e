"""The KV wire: frames and their validation, wire compression, protobuf conversion (docs/kv-wire.md).

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
    TransferMode,
    WireEncoding,
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
    "TransferMode",
    "WireEncoding",
]
