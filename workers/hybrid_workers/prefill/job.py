"""One request's prefill, run on the compute lane: layers into the pipe as they finish, then the trailer."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from hybrid_workers.engine import LoadedModel, SamplingParams, prefill, sample
from hybrid_workers.enums import TransferMode
from hybrid_workers.kv.frames import KVRequest, Trailer
from hybrid_workers.prefill.pipe import Cancelled, LayerPipe, LayerReady, PrefillDone, PrefillFailed


@dataclass
class PrefillJob:
    """A queued prefill: `run()` on the compute thread feeds `pipe`; cancelled jobs skip or abort."""

    lm: LoadedModel
    request: KVRequest
    params: SamplingParams
    pipe: LayerPipe
    arrival: float  # perf_counter() when the request arrived

    def run(self) -> None:
        """Prefill, hand over layers (now, or all after the forward in bulk mode), then PrefillDone.

        Never raises: a failure becomes PrefillFailed in the pipe, a cancellation just stops.
        """
        if self.pipe.cancelled:
            return  # the client left while we were queued
        try:
            self._run()
        except Cancelled:
            return
        except Exception as exc:  # reported to the client as the stream's status
            if not self.pipe.cancelled:
                self._report(exc)

    def _report(self, exc: BaseException) -> None:
        try:
            self.pipe.put(PrefillFailed(exc))
        except Cancelled:
            return

    def _run(self) -> None:
        started, started_unix = time.perf_counter(), time.time()
        done_at: list[float] = []  # perf_counter() when each layer was final
        held: list[LayerReady] = []  # bulk mode: layers wait for the whole forward

        def on_layer(index: int, keys: torch.Tensor, values: torch.Tensor) -> None:
            if self.pipe.cancelled:
                raise Cancelled()  # aborts the forward pass; the cache is dropped with it
            done_at.append(time.perf_counter())
            item = LayerReady(index, keys, values)
            if self.request.mode is TransferMode.BULK:
                held.append(item)
            else:
                self.pipe.put(item)

        result = prefill(self.lm, self.request.token_ids, on_layer)
        token, logprob = sample(result.logits, self.params, step=0)
        ended = time.perf_counter()
        for item in held:
            self.pipe.put(item)
        trailer = Trailer(
            first_token=token,
            first_logprob=logprob,
            layer_seconds=result.layer_seconds,
            layer_done_seconds=tuple(t - self.arrival for t in done_at),
            queue_seconds=started - self.arrival,
            prefill_seconds=ended - started,
            prefill_start_unix=started_unix,
            prefill_end_unix=started_unix + (ended - started),
            send_tail_seconds=0.0,
        )
        self.pipe.put(PrefillDone(trailer, last_layer_done=done_at[-1]))
