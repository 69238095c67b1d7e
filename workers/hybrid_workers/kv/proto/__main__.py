"""`python -m hybrid_workers.kv.proto`: (re)build the gRPC stubs from workers/proto/kv.proto."""

from hybrid_workers.kv.proto import PACKAGE_DIR, generate

generate()
print(f"generated stubs in {PACKAGE_DIR}")
