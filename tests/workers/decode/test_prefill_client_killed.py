"""A prefill worker process killed (SIGKILL) mid-stream: the client fails with a transport error, promptly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.engine import SamplingParams
from hybrid_workers.kv.errors import KVProtocolError, Reason

# A real prefill worker whose prefill stops after handing layer 0 to the sender (until it is killed);
# it prints its port, then "layer 0".
WORKER = """
import sys, time
from hybrid_workers.engine import load_model, prefill
from hybrid_workers.prefill import job
from hybrid_workers.prefill.config import PrefillServerConfig
from hybrid_workers.prefill.server import start_server

def slow_prefill(lm, ids, on_layer):
    def slow(i, k, v):
        on_layer(i, k, v)
        print(f"layer {i}", flush=True)
        time.sleep(600)  # killed meanwhile: the stream breaks after layer 0, whatever the load
    return prefill(lm, ids, slow)

job.prefill = slow_prefill
lm = load_model(sys.argv[1], device="cpu", dtype="float32", progress=False)
running = start_server(lm, PrefillServerConfig(host="127.0.0.1", port=0))
print(f"port {running.port}", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_killed_worker_mid_stream_is_a_transport_error(tiny_lm, tiny_model_dir: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(tiny_model_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        port = int(worker.stdout.readline().split()[1])
        outcome: dict[str, BaseException] = {}

        def call() -> None:
            with PrefillClient(f"127.0.0.1:{port}", tiny_lm, timeout_s=60) as client:
                try:
                    client.prefill([1, *range(8, 100)], SamplingParams(max_tokens=1, temperature=0))
                except BaseException as exc:  # recorded for the assertions below
                    outcome["error"] = exc

        caller = threading.Thread(target=call)
        caller.start()
        assert worker.stdout.readline().strip() == "layer 0"  # layer 0 is on its way; the rest never comes
        worker.send_signal(signal.SIGKILL)
        caller.join(timeout=30)
        assert not caller.is_alive(), "the client hung after the worker died"
    finally:
        worker.kill()
        worker.wait()
    error = outcome.get("error")
    assert isinstance(error, KVProtocolError), repr(error)
    assert error.reason is Reason.TRANSPORT
    assert f"127.0.0.1:{port}" in str(error)
    print(f"\n{error}")
