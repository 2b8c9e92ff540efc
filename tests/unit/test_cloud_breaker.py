"""The cloud backend's circuit breaker, on a fake clock."""

from __future__ import annotations

import pytest

from edged.backends.breaker import Breaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


def opened(failures: int = 3, cooldown_s: float = 10.0) -> tuple[Breaker, FakeClock]:
    clock = FakeClock()
    b = Breaker(failures, cooldown_s, clock)
    for _ in range(failures):
        assert b.allow()
        b.record_failure()
    assert b.state == "open"
    return b, clock


def test_opens_after_n_consecutive_failures_not_before() -> None:
    clock = FakeClock()
    b = Breaker(3, 10.0, clock)
    for i in range(2):
        assert b.allow()
        b.record_failure()
        assert b.state == "closed", i
        assert b.allow_check()
    assert b.allow()
    b.record_failure()
    assert b.state == "open"
    assert not b.allow_check()
    assert not b.allow()


def test_one_failure_opens_a_breaker_of_one() -> None:
    b = Breaker(1, 10.0, FakeClock())
    b.record_failure()
    assert b.state == "open"


def test_success_resets_the_count() -> None:
    b = Breaker(3, 10.0, FakeClock())
    for _ in range(2):
        b.record_failure()
    b.record_success()
    assert b.consecutive_failures == 0
    for _ in range(2):
        b.record_failure()
    assert b.state == "closed"  # 2 + 2 failures, but never 3 in a row
    b.record_failure()
    assert b.state == "open"


def test_stays_open_for_the_whole_cooldown() -> None:
    b, clock = opened(cooldown_s=10.0)
    clock.advance(9.999)
    assert b.state == "open"
    assert not b.allow_check()
    assert not b.allow()
    clock.advance(0.001)
    assert b.state == "half_open"


def test_half_open_admits_exactly_one_trial() -> None:
    b, clock = opened()
    clock.advance(10.0)
    # the router's question, asked many times, never uses the trial up
    for _ in range(5):
        assert b.allow_check()
    assert b.state == "half_open"
    assert b.allow()  # the trial
    assert not b.allow_check()
    assert not b.allow()
    assert not b.allow()
    assert b.state == "half_open"


def test_trial_success_closes() -> None:
    b, clock = opened(failures=2)
    clock.advance(10.0)
    assert b.allow()
    b.record_success()
    assert b.state == "closed"
    assert b.allow() and b.allow() and b.allow_check()
    # the count started over: it takes the full number of failures to open again
    b.record_failure()
    assert b.state == "closed"
    b.record_failure()
    assert b.state == "open"


def test_trial_failure_reopens_with_a_fresh_cooldown() -> None:
    b, clock = opened(cooldown_s=10.0)
    clock.advance(15.0)  # well past the first cooldown
    assert b.allow()
    clock.advance(3.0)  # the trial takes a while, then fails
    b.record_failure()
    assert b.state == "open"
    assert not b.allow_check()
    clock.advance(9.9)  # the cooldown runs from the trial's failure, not from the first opening
    assert b.state == "open"
    assert not b.allow()
    clock.advance(0.1)
    assert b.state == "half_open"
    assert b.allow()
    assert not b.allow()


def test_released_trial_can_be_taken_again() -> None:
    b, clock = opened()
    clock.advance(10.0)
    assert b.allow()
    b.release()  # e.g. the trial was cancelled before the server answered
    assert b.state == "half_open"
    assert b.allow_check()
    assert b.allow()
    assert not b.allow()


def test_late_failure_while_open_does_not_extend_the_cooldown() -> None:
    b, clock = opened(cooldown_s=10.0)
    clock.advance(5.0)
    b.record_failure()  # a request admitted before the breaker opened reports late
    clock.advance(5.0)
    assert b.state == "half_open"


def test_late_failure_while_half_open_leaves_the_trial_to_decide() -> None:
    b, clock = opened(cooldown_s=10.0)
    clock.advance(10.0)
    assert b.state == "half_open"
    b.record_failure()  # not the trial: it was admitted long before
    assert b.state == "half_open"
    assert b.allow()  # the trial is still available


@pytest.mark.parametrize(("failures", "cooldown_s"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_rejects_nonsense_settings(failures: int, cooldown_s: float) -> None:
    with pytest.raises(ValueError):
        Breaker(failures, cooldown_s, FakeClock())
