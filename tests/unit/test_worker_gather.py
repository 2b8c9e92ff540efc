"""The worker's text gathering (``[local] emit_flush_ms``): a job's first text goes at
once (and what follows within the interval), later text is merged into one message per
interval, and every other message (the
``Finished``, the stats) sends what was gathered first, so the order is kept."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from edged.backends.llama.worker import _send_gathered
from edged.types import Finished, Started, TextDelta, Usage


class Conn:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send(self, msg: tuple[Any, ...]) -> None:
        self.sent.append(msg)


def test_first_text_at_once_then_gathered_and_released_before_the_finish() -> None:
    outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
    conn = Conn()
    t = threading.Thread(target=_send_gathered, args=(outbox, conn, 0.05))
    t.start()
    outbox.put(("ev", 1, Started()))
    outbox.put(("ev", 1, TextDelta("Hel", 1)))
    time.sleep(0.02)
    assert conn.sent[-1] == ("ev", 1, TextDelta("Hel", 1))  # the first text is not held
    outbox.put(("ev", 1, TextDelta("l", 1)))  # nor what follows within the interval
    time.sleep(0.02)
    assert conn.sent[-1] == ("ev", 1, TextDelta("l", 1))
    time.sleep(0.03)
    outbox.put(("ev", 1, TextDelta("lo", 1)))
    outbox.put(("ev", 1, TextDelta(" wo", 1)))
    time.sleep(0.1)  # the interval passed: one message for both
    assert conn.sent[-1] == ("ev", 1, TextDelta("lo wo", 2))
    outbox.put(("ev", 1, TextDelta("rld", 1)))
    outbox.put(("ev", 1, Finished("stop", Usage(3, 4))))
    outbox.put(("stats", 1, None, None, None))
    outbox.put(("ev", 2, TextDelta("next", 1)))  # a new job's first text: at once
    outbox.put(None)
    t.join(2)
    assert not t.is_alive()
    assert conn.sent[-4:] == [
        ("ev", 1, TextDelta("rld", 1)),
        ("ev", 1, Finished("stop", Usage(3, 4))),
        ("stats", 1, None, None, None),
        ("ev", 2, TextDelta("next", 1)),
    ]
    texts = "".join(
        m[2].text for m in conn.sent if m[0] == "ev" and m[1] == 1 and isinstance(m[2], TextDelta)
    )
    assert texts == "Helllo world"
