from __future__ import annotations

from edged.mqtt.acks import AckTracker


def test_acks_go_out_in_arrival_order() -> None:
    sent: list[int] = []
    t = AckTracker(sent.append)
    for mid in (1, 2, 3):
        assert t.track(mid)
    t.done(2)
    assert sent == []  # 1 is still in progress
    t.done(1)
    assert sent == [1, 2]
    t.done(3)
    assert sent == [1, 2, 3] and len(t) == 0


def test_redelivered_mid_is_tracked_once_and_unknown_done_is_ignored() -> None:
    sent: list[int] = []
    t = AckTracker(sent.append)
    assert t.track(7)
    assert not t.track(7)
    t.done(99)
    t.done(7)
    t.done(7)
    assert sent == [7]


def test_reset_forgets_pending() -> None:
    sent: list[int] = []
    t = AckTracker(sent.append)
    t.track(1)
    t.reset()
    t.done(1)
    assert sent == [] and len(t) == 0


def test_a_request_of_a_lost_session_never_acknowledges_the_new_sessions_message() -> None:
    """The broker lost its state: the new session numbers messages from 1 again. The old
    request with mid 1 finishing must not acknowledge the new one with mid 1."""
    sent: list[int] = []
    t = AckTracker(sent.append)
    old_generation = t.generation
    t.track(1)  # r1, old session
    t.reset()  # reconnected, session_present=False
    t.track(1)  # r2, new session, same packet id
    t.done(1, old_generation)  # r1 finishes
    assert sent == [] and len(t) == 1
    t.done(1, t.generation)  # r2 finishes
    assert sent == [1] and len(t) == 0
