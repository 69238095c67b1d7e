"""The decode worker's FastAPI application: OpenAI-compatible endpoints, health, readiness, metrics."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from hybrid_workers import metrics
from hybrid_workers.decode import prompt_batch
from hybrid_workers.decode.api_errors import ApiError, from_validation_errors, install_error_handlers
from hybrid_workers.decode.body import UploadAborted, read_body
from hybrid_workers.decode.exchange import Exchange
from hybrid_workers.decode.request_id import RequestIdMiddleware, request_id_of
from hybrid_workers.decode.requests import GenerationRequest, Limits, check_model, from_chat, from_completion
from hybrid_workers.decode.schemas import ChatCompletionRequest, CompletionRequest
from hybrid_workers.decode.stats import RequestStats
from hybrid_workers.decode.worker import ClientGone, DecodeWorker
from hybrid_workers.metrics import RequestOutcome

Body = TypeVar("Body", bound=BaseModel)
Translate = Callable[[Any, Any, Limits], GenerationRequest]
_CLIENT_CLOSED = 499
# Far above any prompt that fits a context (a 128k-token id list is ≈1 MiB of JSON).
MAX_BODY_BYTES = 16 << 20
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def create_app(worker: DecodeWorker) -> FastAPI:
    """The HTTP app serving `worker` (which must outlive it)."""
    app = FastAPI(title="HybridInference decode worker", version="1", docs_url="/docs", redoc_url=None)
    app.state.worker = worker
    app.state.started = int(time.time())
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)  # X-Request-Id on every response, errors included

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Response:
        return await _generate(worker, request, CompletionRequest, from_completion)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        return await _generate(worker, request, ChatCompletionRequest, from_chat)

    def card() -> dict[str, Any]:
        return {
            "id": worker.config.served_model_name,
            "object": "model",
            "created": app.state.started,
            "owned_by": "hybrid-inference",
            "max_model_len": worker.limits.context,
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        check_model(model_id, worker.limits)
        return card()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", response_model=None)
    async def ready() -> JSONResponse:
        state = worker.readiness()
        return JSONResponse(dataclasses.asdict(state), status_code=200 if state.ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return app


class ExchangeStream(StreamingResponse):
    """The SSE response of an exchange; cancels it if the response ends early for any reason.

    Covers the case the stream generator cannot: a client gone before the first chunk was pulled,
    when the generator never started and so never runs its own cleanup.
    """

    def __init__(self, exchange: Exchange) -> None:
        super().__init__(exchange.stream(), media_type="text/event-stream", headers=_SSE_HEADERS)
        self.exchange = exchange

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.exchange.stats.finished:
                self.exchange.abandon()


def parse_body(raw: bytes, model: type[Body]) -> Body:
    """The request body validated as `model`; 400 naming the problem otherwise."""
    if not raw.strip():
        raise ApiError(400, "request body is empty; send a JSON object", code="invalid_json")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise from_validation_errors(exc.errors()) from None


def _translate(
    raw: bytes, model: type[Body], translate: Translate, worker: DecodeWorker
) -> GenerationRequest | list[GenerationRequest]:
    """Parse, validate and tokenise (in a worker thread: a long prompt takes seconds); a `prompt`
    array gives one request per prompt, all validated before any starts."""
    parsed = parse_body(raw, model)
    parts = prompt_batch.split(parsed) if isinstance(parsed, CompletionRequest) else None
    if parts is not None:
        return [translate(part, worker.lm.tokenizer, worker.limits) for part in parts]
    return translate(parsed, worker.lm.tokenizer, worker.limits)


async def _generate(
    worker: DecodeWorker, request: Request, model: type[Body], translate: Translate
) -> Response:
    stats = RequestStats(worker.model_label, request_id_of(request.scope))
    try:
        raw = await read_body(request, MAX_BODY_BYTES, worker.config.read_timeout_s)
        translated = await worker.in_thread(_translate, raw, model, translate, worker)
    except ApiError:
        stats.finish(RequestOutcome.INVALID)
        raise
    except UploadAborted as exc:
        stats.upload_aborted(exc)
        return Response(status_code=_CLIENT_CLOSED)  # nobody reads it; nginx's code for the access log
    if isinstance(translated, list):
        return await _generate_many(worker, request, translated)
    generation = translated
    exchange = Exchange(worker, generation, stats)
    try:
        await exchange.prepare(request.is_disconnected)
        if generation.stream:
            return ExchangeStream(exchange)
        body = await exchange.collect(request.is_disconnected)
        return JSONResponse(body)
    except ClientGone:
        return Response(status_code=_CLIENT_CLOSED)  # nobody reads it; nginx's code for the access log


async def _generate_many(
    worker: DecodeWorker, request: Request, generations: list[GenerationRequest]
) -> Response:
    """Several prompts of one request, run as concurrent exchanges (batched by the engine loop)."""

    request_id = request_id_of(request.scope)

    async def one(index: int, generation: GenerationRequest) -> dict[str, Any]:
        stats = RequestStats(worker.model_label, f"{request_id}.{index}")  # one log line per prompt
        exchange = Exchange(worker, generation, stats)
        await exchange.prepare(request.is_disconnected)
        return await exchange.collect(request.is_disconnected)

    try:
        bodies = await prompt_batch.run_all([functools.partial(one, i, g) for i, g in enumerate(generations)])
    except ClientGone:
        return Response(status_code=_CLIENT_CLOSED)
    return JSONResponse(prompt_batch.merge(bodies))
