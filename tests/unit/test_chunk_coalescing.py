"""The responder's chunk coalescing (``ingress.chunk_flush_ms``): the first chunk goes at
once, then at most one chunk per interval (text that comes sooner waits for the timer,
which fires an interval after the last chunk, not after the held text came), every held
piece goes out before the final, in order, and nothing after it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from edged.errors import Timeout
from edged.ingress.responder import Responder
from edged.types import ReplyAddress


class Pub:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def publish(self, topic: str, payload: bytes, **kw: Any) -> None:
        self.sent.append(json.loads(payload))


def texts(p: Pub) -> list[str]:
    return [m["text"] for m in p.sent if m["type"] == "chunk"]


def test_off_sends_one_chunk_per_piece() -> None:
    p = Pub()
    r = Responder(p, "r1", ReplyAddress("reply/x"))
    for t in ("a", "b", "c"):
        r.chunk(t)
    assert texts(p) == ["a", "b", "c"]
    assert [m["seq"] for m in p.sent] == [0, 1, 2]


def test_first_at_once_then_gathered_by_the_timer_and_flushed_before_the_final() -> None:
    p = Pub()

    async def main() -> None:
        r = Responder(p, "r1", ReplyAddress("reply/x"), flush_s=0.03)
        r.chunk("Hel")
        assert texts(p) == ["Hel"]  # the first chunk is never held
        r.chunk("lo")
        r.chunk(" wo")
        assert texts(p) == ["Hel"]
        await asyncio.sleep(0.06)  # the timer sends what was held, as one chunk
        assert texts(p) == ["Hel", "lo wo"]
        r.chunk("rld")
        r.error(Timeout("late"))  # held text goes first, then the final, then nothing
        r.chunk("more")
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert texts(p) == ["Hel", "lo wo", "rld"]
    assert p.sent[-1]["type"] == "error"
    assert [m["seq"] for m in p.sent if m["type"] == "chunk"] == [0, 1, 2]


def test_text_after_the_interval_goes_at_once_and_the_timer_counts_from_the_last_chunk() -> None:
    p = Pub()
    due: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        r = Responder(p, "r1", ReplyAddress("reply/x"), flush_s=0.05)
        r.chunk("One")
        await asyncio.sleep(0.06)
        r.chunk(" tw")  # the interval has passed: at once, mid-word or not
        assert texts(p) == ["One", " tw"]
        t_sent = loop.time()
        await asyncio.sleep(0.03)
        r.chunk("o th")  # 30 ms after the last chunk: held until 50 ms after it
        assert texts(p) == ["One", " tw"]
        timer = r._timer
        assert timer is not None
        due.append(timer.when() - t_sent)
        await asyncio.sleep(timer.when() - loop.time() + 0.01)  # the timer has fired
        assert len(texts(p)) == 3
        r.chunk("ree")  # just sent: held
        assert texts(p) == ["One", " tw", "o th"]
        r.flush()
        assert texts(p) == ["One", " tw", "o th", "ree"]

    asyncio.run(main())
    # the timer is due 50 ms after the last chunk, not 50 ms after the held text came (80)
    assert abs(due[0] - 0.05) < 0.005
