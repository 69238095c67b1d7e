"""Scheduler: bounded concurrency, FIFO hand-over, queue limit, cancelled waiters (pure asyncio)."""

from __future__ import annotations

import asyncio

import pytest
from hybrid_workers.decode.scheduler import QueueFull, Scheduler


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_slots_are_handed_over_in_arrival_order() -> None:
    seen: list[tuple[int, int]] = []
    scheduler = Scheduler(max_concurrency=1, max_queue=3, observe=lambda r, w: seen.append((r, w)))
    first = await scheduler.acquire()
    order: list[str] = []

    async def wait(name: str) -> None:
        slot = await scheduler.acquire()
        order.append(name)
        slot.release()

    tasks = [asyncio.create_task(wait(name)) for name in ("a", "b", "c")]
    await settle()
    assert (scheduler.running, scheduler.waiting) == (1, 3)
    first.release()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c"]
    assert (scheduler.running, scheduler.waiting) == (0, 0)
    assert seen[-1] == (0, 0) and max(w for _, w in seen) == 3


async def test_beyond_the_queue_acquire_raises_queue_full_with_a_retry_hint() -> None:
    scheduler = Scheduler(max_concurrency=1, max_queue=1)
    held = await scheduler.acquire()
    waiter = asyncio.create_task(scheduler.acquire())
    await settle()
    with pytest.raises(QueueFull) as caught:
        await scheduler.acquire()
    assert caught.value.retry_after_s >= 1
    held.release()
    (await waiter).release()
    assert scheduler.running == 0


async def test_a_cancelled_waiter_leaves_the_queue_without_taking_a_slot() -> None:
    scheduler = Scheduler(max_concurrency=1, max_queue=2)
    held = await scheduler.acquire()
    gone = asyncio.create_task(scheduler.acquire())
    stays = asyncio.create_task(scheduler.acquire())
    await settle()
    gone.cancel()
    await settle()
    assert scheduler.waiting == 1
    held.release()
    slot = await stays
    assert scheduler.running == 1
    slot.release()
    slot.release()  # idempotent: a second release must not free a slot twice
    assert scheduler.running == 0


async def test_a_waiter_cancelled_just_after_the_hand_over_passes_its_slot_on() -> None:
    scheduler = Scheduler(max_concurrency=1, max_queue=2)
    held = await scheduler.acquire()
    unlucky = asyncio.create_task(scheduler.acquire())
    next_in_line = asyncio.create_task(scheduler.acquire())
    await settle()
    held.release()  # the slot is handed to `unlucky`, which is cancelled before it runs
    unlucky.cancel()
    slot = await next_in_line
    assert scheduler.running == 1
    slot.release()
    assert scheduler.running == 0


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_concurrency 0"):
        Scheduler(max_concurrency=0, max_queue=1)
