"""KVBudget: admission by KV bytes, FIFO without overtaking, refusal of what can never fit."""

from __future__ import annotations

import threading

import pytest
from decode_servers import wait_for
from hybrid_workers.decode.kv_budget import KVBudget, ReservationCancelled
from hybrid_workers.errors import UserError


def _reserve_in_thread(
    budget: KVBudget, nbytes: int, got: list[int], cancel: threading.Event
) -> threading.Thread:
    def reserve() -> None:
        try:
            budget.reserve(nbytes, cancel, poll_s=0.01)
            got.append(nbytes)
        except ReservationCancelled:
            got.append(-nbytes)

    thread = threading.Thread(target=reserve)
    thread.start()
    return thread


def test_reservations_wait_in_fifo_order_and_a_small_one_does_not_overtake() -> None:
    seen: list[tuple[int, int]] = []
    budget = KVBudget(100, observe=lambda used, total: seen.append((used, total)))
    budget.reserve(70, threading.Event())
    got: list[int] = []
    big = _reserve_in_thread(budget, 60, got, threading.Event())
    wait_for(lambda: budget.waiting == 1, "the big reservation to wait")
    small = _reserve_in_thread(budget, 20, got, threading.Event())  # would fit now, but queues behind
    wait_for(lambda: budget.waiting == 2, "the small reservation to queue")
    assert got == [] and budget.used_bytes == 70
    budget.release(70)
    big.join(10)
    small.join(10)
    assert got == [60, 20] and budget.used_bytes == 80
    assert seen[-1] == (80, 100)


def test_a_cancelled_waiter_leaves_the_line_and_the_next_one_moves_up() -> None:
    budget = KVBudget(100)
    budget.reserve(90, threading.Event())
    got: list[int] = []
    cancel = threading.Event()
    first = _reserve_in_thread(budget, 50, got, cancel)
    wait_for(lambda: budget.waiting == 1, "the first waiter")
    second = _reserve_in_thread(budget, 10, got, threading.Event())
    wait_for(lambda: budget.waiting == 2, "the second waiter")
    cancel.set()
    first.join(10)
    second.join(10)
    assert got == [-50, 10] and budget.used_bytes == 100


def test_a_request_larger_than_the_whole_budget_is_refused_with_the_sizes() -> None:
    with pytest.raises(UserError, match=r"needs 101 bytes .* budget of 100 bytes.*--kv-cache-bytes"):
        KVBudget(100).reserve(101, threading.Event())
