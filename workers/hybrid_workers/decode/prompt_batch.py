"""OpenAI `prompt` arrays: several prompts in one /v1/completions request, decoded in one batch.

lm-eval's local-completions with batch_size > 1 sends `prompt` as a list of texts (or of token-id
lists). Each prompt becomes its own exchange (scheduler slot, KV slot, metrics line), all started at
once so the engine loop decodes them together; the answer carries one choice per prompt, `index` =
the prompt's position, and the summed usage. A failure of any prompt (429 when the queue cannot take
them all, 400, 503) cancels the others and is the request's answer. Streaming is refused for several
prompts (each prompt's chunks would have to be interleaved; send one request per prompt instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from hybrid_workers.decode.api_errors import bad_request
from hybrid_workers.decode.schemas import CompletionRequest


def split(body: CompletionRequest) -> list[CompletionRequest] | None:
    """One body per prompt when `prompt` holds several prompts; None for a single prompt."""
    prompt = body.prompt
    several = isinstance(prompt, list) and len(prompt) > 1 and isinstance(prompt[0], str | list)
    if not several:
        return None
    if body.stream:
        raise bad_request(
            f"prompt: {len(prompt)} prompts with stream=true; several prompts are answered with "
            "stream=false only (or send one streaming request per prompt)",
            param="prompt",
        )
    return [body.model_copy(update={"prompt": [one]}) for one in prompt]


def merge(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """One response from per-prompt responses: choices indexed by prompt, usage summed."""
    merged = dict(bodies[0])
    merged["choices"] = [
        {**choice, "index": index} for index, body in enumerate(bodies) for choice in body["choices"]
    ]
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    merged["usage"] = {key: sum(body["usage"][key] for body in bodies) for key in keys}
    return merged


async def run_all(calls: list[Callable[[], Awaitable[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Run every call concurrently; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(call()) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
