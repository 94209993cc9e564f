"""Calls with a time limit: run in threads kept for the next call, never waited for past
their limit."""

from __future__ import annotations

import threading

import pytest

from psicbatch.run import limited
from psicbatch.run.limited import TimeLimitExceeded, call_limited, run_limited
from tests.run_processes import wait_for


@pytest.fixture(autouse=True)
def own_idle_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads of earlier tests' calls, idle or ending late, are not handed this test's."""
    monkeypatch.setattr(limited, "_idle", [])


def names() -> dict[int | None, str]:
    return {thread.ident: thread.name for thread in threading.enumerate()}


def test_calls_one_after_another_run_in_one_thread_kept_between_them() -> None:
    """A fresh thread for each file made a run's PIL decoding 1.1-1.2 times slower."""
    first = call_limited(threading.get_ident, 5)
    assert first != threading.get_ident()
    assert [call_limited(threading.get_ident, 5) for _ in range(3)] == [first] * 3
    assert len(set(run_limited([threading.get_ident] * 8, 1, 5))) == 1
    assert names()[first] == "idle-limited"  # not counted as psicbatch's at exit


def test_a_call_past_its_limit_is_not_waited_for_and_its_thread_serves_again_once_free() -> None:
    released = threading.Event()
    stuck_in: list[int] = []

    def stuck() -> None:
        stuck_in.append(threading.get_ident())
        released.wait(30)

    with pytest.raises(TimeLimitExceeded, match=r"^took longer than 0\.2 s$"):
        call_limited(stuck, 0.2)
    assert call_limited(threading.get_ident, 5) != stuck_in[0]
    assert names()[stuck_in[0]] == "psicbatch-limited"  # what exiting counts as stuck
    released.set()
    wait_for(lambda: names()[stuck_in[0]] == "idle-limited")
    assert call_limited(threading.get_ident, 5) == stuck_in[0]


def test_calls_at_once_get_threads_of_their_own_and_idle_threads_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limited, "IDLE_SECONDS", 0.3)
    barrier = threading.Barrier(3, timeout=10)

    def meet() -> int:
        barrier.wait()  # all three at once, or a BrokenBarrierError
        return threading.get_ident()

    threads = set(run_limited([meet] * 3, 3, 10))
    assert len(threads) == 3
    wait_for(lambda: not threads & set(names()))
    assert limited._idle == []
