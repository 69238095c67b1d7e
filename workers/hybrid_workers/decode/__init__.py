"""The decode worker: OpenAI-compatible HTTP API, request scheduler, remote prefill with fallback.

Module map:
- config.py      DecodeConfig (one frozen dataclass built from the command line)
- schemas.py     pydantic request models (the HTTP edge only)
- api_errors.py  OpenAI-shaped JSON errors; every bad request is a 4xx
- requests.py    HTTP request -> GenerationRequest (tokenized prompt + SamplingParams), validated
- prompts.py     prompt text/ids and chat messages -> token ids; size limits checked before tokenising
- body.py        reading a request body: size limit, read deadline (408), aborted uploads
- http_server.py uvicorn config: idle / trickling connections closed (--read-timeout)
- token_texts.py logprobs token names (`bytes:` + hex for partial characters), own bytes, text offsets
- scheduler.py   bounded concurrency and waiting queue (429 beyond it)
- routing.py     remote prefill through the PrefillClient, or local, with the fallback policy
- peer_monitor.py  the prefill worker's circuit breaker and its health + handshake probe (/ready)
- runner.py      one request's work in a worker thread (KV reservation, prefill routing, waiting
                 for its sequence to leave the batch, scoring), events back to the event loop
- batch_loop.py  the one engine loop: one forward pass per step for all running sequences, chunked
                 local prefill between steps, joins and leaves
- sequence.py    one sequence in the batch: slot, position, finish rules (EOS, stop, length)
- kv_budget.py   admission by KV memory (--kv-cache-bytes), FIFO without overtaking
- prompt_batch.py  OpenAI `prompt` arrays: one exchange per prompt, merged into indexed choices
- stats.py       per-request timings -> Prometheus metrics and one log line
- responses.py   OpenAI response and SSE chunk shapes
- logprobs.py    prompt scoring (echo) and top logprobs
- worker.py      DecodeWorker: model, engine loop, KV budget, router, scheduler, thread pool
- exchange.py    one request/response: admission, prefill wait, SSE stream or whole body, outcome
- app.py         the FastAPI application
- request_id.py  X-Request-Id on every response (ASGI middleware)
- engine_api.py  the engine-neutral decode-engine interface: KVSlot (where a prompt's KV lands,
                 layer by layer), LayerTarget (writable byte buffers of one layer), DecodeEngine
                 (new_slot, prefill_chunk, step a batch, sample); torch engine: engine/batched.py,
                 MLX engine: mlx_engine/engine.py
- engines.py     --engine torch|mlx|auto: choosing, loading, the DecodeEngine of a model, scoring
- prefill_client.py / receiver*.py   the gRPC client of the KV stream, Handshake
- transfer_watch.py  cancels a remote prefill whose client left or whose transfer stalled
- transfer_clock.py  a remote prefill's receipt times and the TransferTimings (wire time, goodput) they give
"""
