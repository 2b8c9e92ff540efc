"""The model worker's restart back-off: it grows while the worker keeps dying young, and
starts again from its first step after a healthy run (``HEALTHY_RESET_S``)."""

from __future__ import annotations

from edged.backends.llama.backoff import Backoff
from edged.backends.llama.process import HEALTHY_RESET_S, RESTART_BACKOFF_S


def test_grows_while_the_worker_dies_young_and_stays_at_the_last_step() -> None:
    b = Backoff(RESTART_BACKOFF_S, HEALTHY_RESET_S)
    t, delays = 1000.0, []
    for _ in range(8):
        b.up(t)
        t += 5.0  # serves a little, then crashes
        delays.append(b.died(t))
        t += delays[-1]
    assert delays == [*RESTART_BACKOFF_S, RESTART_BACKOFF_S[-1], RESTART_BACKOFF_S[-1]]


def test_a_healthy_run_resets_it_however_many_crashes_came_before() -> None:
    b = Backoff((0.5, 1.0, 30.0), healthy_s=60.0)
    t = 0.0
    for _ in range(6):  # six "serve, then crash" rounds: at the top step
        b.up(t)
        t += 1.0
        b.died(t)
    assert b.died(t) == 30.0  # a failed restart (no run in between) stays at the top
    b.up(t)
    t += 59.0
    assert b.died(t) == 30.0  # 59 s is not long enough
    b.up(t)
    t += 60.0
    assert b.died(t) == 0.5  # 60 s up: from the first step again
    b.up(t)
    assert b.died(t + 1.0) == 1.0
