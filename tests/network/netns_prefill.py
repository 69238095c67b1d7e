"""Prefill side of the network test, run inside the prefill namespace: the real prefill server whose
first prefill holds its last layer until the decode side has received layer 0.

Usage: python netns_prefill.py HOST:PORT MODEL_DIR SIGNAL_DIR. The two namespaces share the file
system, so the decode side says "layer 0 received" by creating SIGNAL_DIR/layer0-received. Before its
last layer computes, the first prefill waits for that file (at most HOLD_LIMIT_S, a hang guard) and
writes SIGNAL_DIR/hold-ended with `received` or `gave up`. Layer 0 can only reach the decode side
during the hold if it was sent while the prefill was still computing: an ordering proved by events,
not by comparing clocks.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from hybrid_workers.engine import load_model
from hybrid_workers.prefill.config import PrefillServerConfig
from hybrid_workers.prefill.server import start_server

HOLD_LIMIT_S = 120.0
POLL_S = 0.01


def hold_last_layer_once(model: object, signal_dir: Path) -> None:
    """Make the first forward pass wait, before its last decoder layer, for the decode side's signal."""
    layers = model.model.layers  # type: ignore[attr-defined]
    held = threading.Event()

    def before_last_layer(module: object, args: object) -> None:
        if held.is_set():
            return
        held.set()
        received = signal_dir / "layer0-received"
        waited = threading.Event()
        for _ in range(int(HOLD_LIMIT_S / POLL_S)):
            if received.exists():
                break
            waited.wait(POLL_S)
        (signal_dir / "hold-ended").write_text("received" if received.exists() else "gave up")

    layers[-1].register_forward_pre_hook(before_last_layer)


def main(address: str, model_dir: str, signal_dir: str) -> None:
    host, _, port = address.rpartition(":")
    lm = load_model(model_dir, device="cpu", dtype="float32", progress=False)
    hold_last_layer_once(lm.model, Path(signal_dir))
    running = start_server(lm, PrefillServerConfig(host=host, port=int(port)))
    print(f"prefill worker on {address}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    running.stop(grace_s=0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
