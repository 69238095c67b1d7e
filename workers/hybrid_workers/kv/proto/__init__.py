"""Generated gRPC stubs for workers/proto/kv.proto, built on first import when missing or stale.

The stubs (`kv_pb2`, `kv_pb2_grpc`) are never hand-edited nor committed. `make proto` (or
`python -m hybrid_workers.kv.proto`) builds them; importing this package builds them too, so a fresh
editable install works without a separate step. protoc runs on a copy of the proto placed at
`hybrid_workers/kv/proto/kv.proto`, so the generated code imports `hybrid_workers.kv.proto.kv_pb2`
(not a top-level `kv_pb2`, which would need a sys.path hack).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# workers/hybrid_workers/kv/proto -> workers/proto/kv.proto (the source of truth)
PROTO_SOURCE = PACKAGE_DIR.parents[2] / "proto" / "kv.proto"
STUBS = ("kv_pb2.py", "kv_pb2.pyi", "kv_pb2_grpc.py")


def stubs_are_stale() -> bool:
    """True when a stub is missing or older than the proto source (a source checkout edited it)."""
    if not PROTO_SOURCE.exists():
        return not all((PACKAGE_DIR / name).exists() for name in STUBS)
    source_mtime = PROTO_SOURCE.stat().st_mtime
    return any(
        not (PACKAGE_DIR / name).exists() or (PACKAGE_DIR / name).stat().st_mtime < source_mtime
        for name in STUBS
    )


def generate() -> None:
    """Run protoc (grpcio-tools) and move the stubs into this package atomically.

    Safe when several processes do it at once: each works in its own temporary folder and
    `os.replace` swaps whole files, the messages module before the service module that imports it.
    """
    from grpc_tools import protoc  # a worker dependency; imported here to keep imports cheap

    if not PROTO_SOURCE.exists():
        raise ImportError(f"{PROTO_SOURCE}: proto source not found; reinstall from a source checkout")
    with tempfile.TemporaryDirectory(prefix="kvproto-", dir=PACKAGE_DIR) as tmp:
        nested = Path(tmp) / "hybrid_workers" / "kv" / "proto"
        nested.mkdir(parents=True)
        shutil.copyfile(PROTO_SOURCE, nested / "kv.proto")
        args = ["protoc", f"-I{tmp}", f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"]
        if protoc.main([*args, str(nested / "kv.proto")]) != 0:
            raise ImportError(f"protoc failed on {PROTO_SOURCE}")
        for name in STUBS:
            os.replace(nested / name, PACKAGE_DIR / name)


if stubs_are_stale():
    generate()

from hybrid_workers.kv.proto import kv_pb2, kv_pb2_grpc  # noqa: E402  (generated just above)

__all__ = ["generate", "kv_pb2", "kv_pb2_grpc"]
