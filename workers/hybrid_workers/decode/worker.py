"""DecodeWorker: the model, its engine loop, the prefill router, the scheduler and the thread pool."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from hybrid_workers import metrics
from hybrid_workers.decode import engines
from hybrid_workers.decode.api_errors import ApiError
from hybrid_workers.decode.batch_loop import BatchLoop
from hybrid_workers.decode.config import KV_SHARE_OF_FREE, DecodeConfig
from hybrid_workers.decode.kv_budget import KVBudget
from hybrid_workers.decode.prompts import Limits, max_prompt_chars
from hybrid_workers.decode.requests import GenerationRequest
from hybrid_workers.decode.routing import PrefillPeer, PrefillRouter, Readiness
from hybrid_workers.decode.runner import RequestRun, model_lock
from hybrid_workers.decode.scheduler import QueueFull, Scheduler, Slot
from hybrid_workers.decode.token_texts import TokenTexts
from hybrid_workers.engine.batched import free_memory_bytes
from hybrid_workers.engine.loading import LoadedModel

# How often a request waiting without sending anything checks whether its client is still there.
DISCONNECT_POLL_S = 0.2
# Threads for the HTTP layer's CPU work (parsing, tokenising, shaping logprobs), off the event loop.
HTTP_CPU_THREADS = 2

T = TypeVar("T")
IsDisconnected = Callable[[], Awaitable[bool]]


class ClientGone(Exception):
    """The client disconnected before its response was complete."""


class DecodeWorker:
    """Everything the HTTP app needs; one per process."""

    def __init__(self, lm: LoadedModel, config: DecodeConfig, peer: PrefillPeer | None = None) -> None:
        self.lm = lm
        self.config = config
        self.model_label = config.served_model_name
        context = config.context_limit(lm.max_context)
        self.limits = Limits(
            config.served_model_name,
            context,
            lm.vocab_size,
            max_prompt_chars=max_prompt_chars(lm.tokenizer, context),
            eos_token_ids=frozenset(lm.eos_token_ids),
        )
        self.router = PrefillRouter(config, self.model_label, peer)
        self.router.start()  # the first handshake with the prefill worker, then background probes
        self.max_concurrency = config.concurrency(lm.device.type)
        self.scheduler = Scheduler(self.max_concurrency, config.max_queue, observe=self._observe)
        self.executor = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="decode")
        self.engine = engines.decode_engine(lm)  # torch or MLX, as the model was loaded
        self.budget = KVBudget(self._kv_budget(lm), observe=self._observe_kv)
        self.engine_loop = BatchLoop(
            self.engine,
            self.budget,
            model_lock(lm),
            prefill_chunk_tokens=config.prefill_chunk_tokens,
            observe=metrics.batch_size.labels(self.model_label).set,
        )
        self.cpu = ThreadPoolExecutor(HTTP_CPU_THREADS, thread_name_prefix="decode-http")
        self.token_texts = TokenTexts(lm.tokenizer)
        self._observe(0, 0)
        self._export_predictions()
        metrics.zero_labelled_series(self.model_label)
        metrics.export_build_info(self.model_label, "decode")

    def _observe(self, running: int, waiting: int) -> None:
        metrics.requests_running.labels(self.model_label).set(running)
        metrics.requests_waiting.labels(self.model_label).set(waiting)

    def _kv_budget(self, lm: LoadedModel) -> int:
        """--kv-cache-bytes, or a share of the memory free now (at least one full-context sequence)."""
        if self.config.kv_cache_bytes is not None:
            return self.config.kv_cache_bytes
        share = KV_SHARE_OF_FREE.get(lm.device.type, 0.5)
        one_sequence = self.engine.kv_bytes_per_token * (lm.max_context + 1)
        return max(int(free_memory_bytes(lm.device) * share), one_sequence)

    def _observe_kv(self, used: int, budget: int) -> None:
        metrics.kv_cache_usage_ratio.labels(self.model_label).set(used / budget)
        metrics.kv_cache_budget_bytes.labels(self.model_label).set(budget)

    def _export_predictions(self) -> None:
        if self.config.predicted_ttft_s is not None:
            metrics.predicted_ttft_seconds.labels(self.model_label).set(self.config.predicted_ttft_s)
        if self.config.predicted_decode_tps is not None:
            gauge = metrics.predicted_decode_tokens_per_second.labels(self.model_label)
            gauge.set(self.config.predicted_decode_tps)

    async def start(self, request: GenerationRequest, is_disconnected: IsDisconnected) -> RequestRun:
        """Wait for a slot (429 when the queue is full) and start the request's thread."""
        slot = await self._admit(is_disconnected)
        loop = asyncio.get_running_loop()
        run = RequestRun(self.lm, self.router, self.engine_loop, request, loop, on_exit=slot.release)
        try:
            loop.run_in_executor(self.executor, run.work)
        except RuntimeError:  # executor shut down: the server is stopping
            slot.release()
            raise ApiError(503, "server is shutting down", type="server_error") from None
        return run

    async def _admit(self, is_disconnected: IsDisconnected) -> Slot:
        acquiring = asyncio.ensure_future(self.scheduler.acquire())
        try:
            return await wait_unless_disconnected(acquiring, is_disconnected)
        except QueueFull as exc:
            raise _too_many(exc) from None
        except asyncio.CancelledError:  # e.g. a batch-mate prompt of the same request failed
            if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
                acquiring.result().release()  # got a slot just now: give it back
            raise

    async def in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on the HTTP layer's threads: CPU work never blocks the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.cpu, function, *args)

    def readiness(self) -> Readiness:
        """(ready, why): the model is loaded; the prefill worker is ready or long prompts may prefill here."""
        return self.router.readiness()

    def close(self) -> None:
        """Stop accepting model work; the engine loop ends after its current step."""
        self.router.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.engine_loop.close()
        self.cpu.shutdown(wait=False, cancel_futures=True)


async def wait_unless_disconnected(waiting: asyncio.Future[T], is_disconnected: IsDisconnected) -> T:
    """The result of `waiting`, unless the client goes away first (then ClientGone, `waiting` cancelled)."""
    while True:
        try:
            done, _ = await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
        except asyncio.CancelledError:  # whoever waits is cancelled: so is what it waited for
            waiting.cancel()
            raise
        if done:
            return waiting.result()
        if await is_disconnected():
            waiting.cancel()
            raise ClientGone()


def _too_many(exc: QueueFull) -> ApiError:
    return ApiError(
        429,
        f"{exc}; or raise --max-queue / --max-concurrency",
        type="rate_limit_error",
        code="queue_full",
        headers={"Retry-After": str(exc.retry_after_s)},
    )
