from __future__ import annotations

from edged.mqtt.link import AckTracker


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
