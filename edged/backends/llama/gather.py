"""Text gathering on the decode thread (``[local] emit_flush_ms``), for both isolations.

Every message the decode hands on costs a wake-up on the other side (the worker's sender
thread and the daemon's event loop, or the loop alone in the thread variant), and a wake-up
costs far more than the Python it runs: on the 2-core development VM an idle asyncio loop
pays about 250 us of CPU to wake for nothing (docs/benchmarks.md). So the decode thread
itself gathers a job's text: its first ``AT_ONCE`` pieces go at once (the client's time to
first chunk never waits for an interval, not even behind a guardian that holds the first
word back for a piece or two); after that, text is handed on at the first token at
least ``flush_s`` after the last hand-off. No timer and no extra thread: a
held piece waits at most until the next token, which with tokens slower than ``flush_s``
means it is never held. Anything that is not text (``Finished``, a tool call, an error)
hands on what was gathered first, so the order is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from edged.types import TextDelta

#: A job's first pieces of text, handed on at once.
AT_ONCE = 3


class TextGather:
    """An ``emit`` for one job that gathers its text (see the module's docstring)."""

    __slots__ = ("_clock", "_emit", "_flush_s", "_passed", "_sent_at", "_texts", "_tokens")

    def __init__(
        self,
        emit: Callable[[Any], None],
        flush_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._flush_s = flush_s
        self._clock = clock
        self._passed = 0  # pieces handed on at once
        self._sent_at = 0.0
        self._texts: list[str] = []
        self._tokens = 0

    def __call__(self, ev: Any) -> None:
        if not isinstance(ev, TextDelta):
            self.release()
            self._emit(ev)
            return
        now = self._clock()
        if self._passed < AT_ONCE:
            self._passed += 1
            self._emit(ev)
            self._sent_at = now
            return
        self._texts.append(ev.text)
        self._tokens += ev.tokens
        if now - self._sent_at >= self._flush_s:
            self.release(now)

    def release(self, now: float | None = None) -> None:
        """Hand on the text gathered so far (if any) as one ``TextDelta``."""
        if self._texts:
            text, tokens = "".join(self._texts), self._tokens
            self._texts, self._tokens = [], 0
            self._emit(TextDelta(text, tokens))
            self._sent_at = self._clock() if now is None else now


def gathering(emit: Callable[[Any], None], flush_ms: float) -> Callable[[Any], None]:
    """``emit`` itself when ``flush_ms`` is 0, else a :class:`TextGather` around it."""
    return emit if flush_ms <= 0 else TextGather(emit, flush_ms / 1000)
