"""The prefill worker: a gRPC server that computes prompts and streams their KV cache layer by layer.

- pipe.py      bounded hand-over from the compute thread to the gRPC response stream (backpressure, cancel)
- job.py       one request's prefill on the compute lane: on_layer -> pipe, first token, timings
- config.py    PrefillServerConfig: every setting of the worker, validated (the CLI's defaults)
- servicer.py  the PrefillWorker service: Prefill (server stream), Info
- server.py    gRPC server start-up (TLS, message limits, grpc.health.v1)
"""
