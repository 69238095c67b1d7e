"""The engine loop: sequences decoded together (remote and local prefill) equal each decoded alone.

Orderings are proven with the loop's events and token callbacks, never with timing: a sequence's
`on_token` runs in the loop thread, so a callback that cancels, submits or releases acts at a known
point between two iterations.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hybrid_workers.decode.batch_loop import BatchLoop, LoopEvent
from hybrid_workers.decode.kv_budget import KVBudget
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.decode.runner import model_lock
from hybrid_workers.decode.sequence import SequenceRun
from hybrid_workers.engine import SamplingParams, stream_completion
from hybrid_workers.engine.batched import TorchDecodeEngine
from hybrid_workers.engine.generation import TextStep
from hybrid_workers.prefill.config import PrefillServerConfig
from hybrid_workers.prefill.server import start_server

TOKENS = 32
GREEDY = SamplingParams(max_tokens=TOKENS, temperature=0)
LENGTHS = (3, 40, 9, 120, 17, 64, 1, 200)  # 8 mixed lengths; the odd positions prefill remotely
HANG_S = 120


def prompt(length: int, vocab: int, salt: int = 0) -> list[int]:
    rng = random.Random(length * 1000 + salt)
    return [1] + [rng.randrange(8, vocab) for _ in range(length - 1)]


def solo(lm: Any, ids: list[int], params: SamplingParams) -> list[TextStep]:
    """The reference: the sequence decoded alone by the single-sequence engine path."""
    return list(stream_completion(lm, ids, params))


class Harness:
    """A BatchLoop on the tiny model, with helpers to run sequences and record what the loop did."""

    def __init__(self, lm: Any, chunk: int = 16) -> None:
        self.lm = lm
        self.engine = TorchDecodeEngine(lm)
        self.budget = KVBudget(1 << 30)
        self.loop = BatchLoop(self.engine, self.budget, model_lock(lm), prefill_chunk_tokens=chunk)
        self.events: list[LoopEvent] = []
        self.loop.listeners.append(self.events.append)

    def sequence(
        self,
        ids: list[int],
        params: SamplingParams,
        on_token: Callable[[SequenceRun, TextStep], None] | None = None,
    ) -> SequenceRun:
        slot = self.loop.reserve(len(ids), params.max_tokens, threading.Event())
        holder: list[SequenceRun] = []

        def tokens(step: TextStep) -> None:
            steps.append(step)
            if on_token is not None:
                on_token(holder[0], step)

        steps: list[TextStep] = []
        run = SequenceRun(
            ids, params, slot, self.lm.tokenizer, self.lm.eos_token_ids, self.lm.max_context,
            on_token=tokens, cancelled=threading.Event(),
        )  # fmt: skip
        run.steps = steps  # type: ignore[attr-defined]
        holder.append(run)
        return run

    def submit_local(self, run: SequenceRun) -> None:
        self.loop.submit(run, None)

    def submit_remote(self, run: SequenceRun, client: PrefillClient) -> None:
        remote = client.prefill(run.prompt_ids, run.params, slot=run.slot)
        self.loop.submit(run, (remote.first_token, remote.first_logprob))

    def submit_half_remote(self, runs: list[SequenceRun], client: PrefillClient) -> None:
        """Every other run prefilled by `client` (from threads), the rest locally, all joining before the
        loop's first forward pass (it waits for the model lock held here meanwhile)."""
        with model_lock(self.lm):
            remote = [threading.Thread(target=self.submit_remote, args=(r, client)) for r in runs[1::2]]
            for thread in remote:
                thread.start()
            for run in runs[::2]:
                self.submit_local(run)
            for thread in remote:
                thread.join(HANG_S)

    def close(self) -> None:
        self.loop.close()


@pytest.fixture(scope="module")
def prefill_client(prefill_lm: Any, tiny_lm: Any) -> Iterator[PrefillClient]:
    running = start_server(prefill_lm, PrefillServerConfig(host="127.0.0.1", port=0))
    client = PrefillClient(f"127.0.0.1:{running.port}", tiny_lm, timeout_s=60)
    yield client
    client.close()
    running.stop()


@pytest.fixture
def harness(tiny_lm: Any) -> Iterator[Harness]:
    h = Harness(tiny_lm)
    yield h
    h.close()


def finished(runs: list[SequenceRun]) -> None:
    for run in runs:
        assert run.done.wait(HANG_S), "sequence did not finish"


def test_eight_mixed_sequences_remote_and_local_equal_each_decoded_alone(
    harness: Harness, tiny_lm: Any, prefill_client: PrefillClient
) -> None:
    prompts = [prompt(n, tiny_lm.vocab_size) for n in LENGTHS]
    runs = [harness.sequence(ids, GREEDY) for ids in prompts]
    harness.submit_half_remote(runs, prefill_client)  # everyone is in before decoding
    finished(runs)
    assert max(e.batch for e in harness.events if e.kind == "step") == len(runs)  # decoded together
    for ids, run in zip(prompts, runs, strict=True):
        reference = solo(tiny_lm, ids, GREEDY)
        assert run.error is None and len(reference) == TOKENS
        assert [s.token_id for s in run.steps] == [s.token_id for s in reference]  # type: ignore[attr-defined]
        for got, want in zip(run.steps, reference, strict=True):  # type: ignore[attr-defined]
            assert abs(got.logprob - want.logprob) < 1e-4
    assert harness.budget.used_bytes == 0  # every slot released


def test_seeded_sampling_is_identical_alone_and_in_a_batch(harness: Harness, tiny_lm: Any) -> None:
    params = [
        SamplingParams(max_tokens=TOKENS, temperature=0.9, top_p=0.95, top_k=50, seed=s) for s in range(6)
    ]
    prompts = [prompt(10 + 7 * i, tiny_lm.vocab_size, salt=1) for i in range(6)]
    runs = [harness.sequence(ids, p) for ids, p in zip(prompts, params, strict=True)]
    with model_lock(tiny_lm):
        for run in runs:
            harness.submit_local(run)
    finished(runs)
    for ids, p, run in zip(prompts, params, runs, strict=True):
        assert "".join(s.text for s in run.steps) == "".join(s.text for s in solo(tiny_lm, ids, p))  # type: ignore[attr-defined]


def test_a_sequence_joins_mid_stream_and_leaves_while_the_other_goes_on(
    harness: Harness, tiny_lm: Any
) -> None:
    long_ids, short_ids = prompt(30, tiny_lm.vocab_size, 2), prompt(12, tiny_lm.vocab_size, 3)
    short_params = SamplingParams(max_tokens=5, temperature=0)
    joined_at: list[int] = []
    short = harness.sequence(short_ids, short_params)

    def join_at_ten(run: SequenceRun, step: TextStep) -> None:
        if len(run.generated) == 10:
            joined_at.append(len(harness.events))
            harness.submit_local(short)  # from the loop thread, between two iterations

    long = harness.sequence(long_ids, GREEDY, on_token=join_at_ten)
    harness.submit_local(long)
    finished([long, short])
    after = harness.events[joined_at[0] :]
    steps = [e.batch for e in after if e.kind == "step"]
    assert 2 in steps and steps[-1] == 1  # decoded together, then the long one alone after the short left
    assert [s.token_id for s in long.steps] == [s.token_id for s in solo(tiny_lm, long_ids, GREEDY)]  # type: ignore[attr-defined]
    assert [s.token_id for s in short.steps] == [s.token_id for s in solo(tiny_lm, short_ids, short_params)]  # type: ignore[attr-defined]


def test_cancelling_one_sequence_stops_it_at_once_and_spares_its_batch_mates(
    harness: Harness, tiny_lm: Any
) -> None:
    prompts = [prompt(20 + i, tiny_lm.vocab_size, 4) for i in range(3)]

    def cancel_at_three(run: SequenceRun, step: TextStep) -> None:
        if len(run.generated) == 3:
            run.cancelled.set()

    runs = [harness.sequence(prompts[0], GREEDY, on_token=cancel_at_three)]
    runs += [harness.sequence(ids, GREEDY) for ids in prompts[1:]]
    with model_lock(tiny_lm):
        for run in runs:
            harness.submit_local(run)
    finished(runs)
    assert len(runs[0].generated) == 3 and not runs[0].finished  # left before its 4th token
    for ids, run in zip(prompts[1:], runs[1:], strict=True):
        assert [s.token_id for s in run.steps] == [s.token_id for s in solo(tiny_lm, ids, GREEDY)]  # type: ignore[attr-defined]
    assert harness.budget.used_bytes == 0


def test_a_sequence_whose_forward_pass_fails_fails_alone(
    harness: Harness, tiny_lm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = [prompt(15 + i, tiny_lm.vocab_size, 5) for i in range(3)]
    runs = [harness.sequence(ids, GREEDY) for ids in prompts]
    poisoned = runs[1].slot
    real_step = harness.engine.step

    def step(entries: Any) -> Any:
        if any(slot is poisoned for slot, _, position in entries if position >= len(prompts[1]) + 4):
            raise RuntimeError("bad slot")
        return real_step(entries)

    monkeypatch.setattr(harness.engine, "step", step)
    with model_lock(tiny_lm):
        for run in runs:
            harness.submit_local(run)
    finished(runs)
    assert isinstance(runs[1].error, RuntimeError) and len(runs[1].generated) == 5
    for index in (0, 2):
        assert runs[index].error is None
        want = [s.token_id for s in solo(tiny_lm, prompts[index], GREEDY)]
        assert [s.token_id for s in runs[index].steps] == want  # type: ignore[attr-defined]


def test_a_long_local_prefill_is_chunked_between_decode_steps_of_running_streams(
    harness: Harness, tiny_lm: Any
) -> None:
    runner_ids, long_ids = prompt(8, tiny_lm.vocab_size, 6), prompt(150, tiny_lm.vocab_size, 7)
    late = harness.sequence(long_ids, SamplingParams(max_tokens=4, temperature=0))

    def admit_long(run: SequenceRun, step: TextStep) -> None:
        if len(run.generated) == 2:
            harness.submit_local(late)

    early = harness.sequence(runner_ids, GREEDY, on_token=admit_long)
    harness.submit_local(early)
    finished([early, late])
    kinds = [e.kind for e in harness.events if e.kind in ("step", "prefill")]
    chunks = [e for e in harness.events if e.kind == "prefill" and e.batch > 0]
    assert [c.tokens for c in chunks] == [16] * 9 + [6]  # 150 positions in chunks of 16
    first, last = kinds.index("prefill", kinds.index("step")), len(kinds) - 1 - kinds[::-1].index("prefill")
    between = kinds[first : last + 1]
    assert all(a != b for a, b in itertools.pairwise(between))  # step, chunk, step, chunk...


class RecordingEngine:
    """The torch engine, recording every logits row it hands out per slot (prefill end, then steps)."""

    def __init__(self, engine: TorchDecodeEngine) -> None:
        self.engine = engine
        self.rows: dict[int, list[Any]] = {}
        self.kv_bytes_per_token = engine.kv_bytes_per_token
        self.new_slot, self.sample = engine.new_slot, engine.sample

    def prefill_chunk(self, slot: Any, ids: Any, start: int) -> Any:
        row = self.engine.prefill_chunk(slot, ids, start)
        if row is not None:
            self.rows.setdefault(id(slot), []).append(row)
        return row

    def step(self, entries: Any) -> Any:
        rows = self.engine.step(entries)
        for (slot, _, _), row in zip(entries, rows, strict=True):
            self.rows.setdefault(id(slot), []).append(row)
        return rows


# Logits of SmolLM2 reach |20|: float32 rounding of the batched products scales with them (one CI run
# saw 1.06e-4 after 18 steps). A wrong position, mask or cache row moves logits by
# 0.1 or more, far outside 1e-4 + 5e-5 x |logit|.
LOGITS_RTOL = 5e-5


@pytest.mark.slow
def test_trained_model_eight_sequences_remote_and_local_match_solo_logits(trained_lm: Any) -> None:
    """SmolLM2-135M, float32: 8 mixed-length prompts, half prefilled by a real prefill worker."""
    from test_batch_engine_reference import solo_logits

    harness = Harness(trained_lm, chunk=64)
    recorder = RecordingEngine(harness.engine)
    harness.loop.engine = recorder  # type: ignore[assignment]
    running = start_server(trained_lm, PrefillServerConfig(host="127.0.0.1", port=0))
    client = PrefillClient(f"127.0.0.1:{running.port}", trained_lm, timeout_s=120)
    texts = [  # greedy continuations of at least 40 tokens (no EOS before), 4..23 prompt tokens
        "def fibonacci(n):",
        "1, 2, 3, 4,",
        "Translate to German: good morning, how are you today?",
        "A list of prime numbers:",
        "Once upon a time, in a village at the edge of a great forest, there lived an old clockmaker who",
        "The history of the printing press",
        "Here is a recipe for bread:",
        "Dear diary, today",
    ]
    prompts = [[int(t) for t in trained_lm.tokenizer.encode(text)] for text in texts]
    params = SamplingParams(max_tokens=TOKENS, temperature=0)
    runs = [harness.sequence(ids, params) for ids in prompts]
    try:
        harness.submit_half_remote(runs, client)
        finished(runs)
    finally:
        harness.close()
        client.close()
        running.stop()
    assert max(e.batch for e in harness.events if e.kind == "step") == len(runs)
    for index, (ids, run) in enumerate(zip(prompts, runs, strict=True)):
        tokens = [s.token_id for s in run.steps]  # type: ignore[attr-defined]
        reference, logits = solo_logits(trained_lm, ids, len(tokens))
        assert (run.error is None and len(tokens) >= TOKENS) or tokens[-1] in trained_lm.eos_token_ids
        assert tokens == reference, f"prompt {index}"
        rows = recorder.rows[id(run.slot)]
        rows = (
            rows if index % 2 == 0 else [None, *rows]
        )  # remote: step 0's logits stayed on the prefill worker
        for step, (row, want) in enumerate(zip(rows, logits, strict=True)):
            if row is not None:  # batched products round differently; 30 layers and 40 steps compound it
                error = (row - want).abs()
                excess = error - (1e-4 + LOGITS_RTOL * want.abs())
                assert float(excess.max()) <= 0, f"prompt {index} step {step}: {float(error.max())}"


@pytest.mark.slow
def test_trained_model_seeded_sampling_is_identical_alone_and_batched(trained_lm: Any) -> None:
    harness = Harness(trained_lm, chunk=64)
    texts = ["Here is a recipe for bread:", "Dear diary, today", "The history of the printing press"]
    params = [SamplingParams(max_tokens=TOKENS, temperature=0.8, top_p=0.95, seed=7 + i) for i in range(3)]
    prompts = [[int(t) for t in trained_lm.tokenizer.encode(text)] for text in texts]
    runs = [harness.sequence(ids, p) for ids, p in zip(prompts, params, strict=True)]
    try:
        with model_lock(trained_lm):
            for run in runs:
                harness.submit_local(run)
        finished(runs)
    finally:
        harness.close()
    assert max(e.batch for e in harness.events if e.kind == "step") == 3
    for ids, p, run in zip(prompts, params, runs, strict=True):
        alone = solo(trained_lm, ids, p)
        assert [s.token_id for s in run.steps] == [s.token_id for s in alone]  # type: ignore[attr-defined]
        assert "".join(s.text for s in run.steps) == "".join(s.text for s in alone)  # type: ignore[attr-defined]
