"""Text gathering on the decode thread (``[local] emit_flush_ms``, :mod:`.llama.gather`):
a job's first three pieces of text go at once, later text is handed on
at the first token at least the interval after the last hand-off, and anything that is not
text hands on what was gathered first, so order and text are kept."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edged.backends.llama.gather import TextGather, gathering
from edged.types import Finished, Started, TextDelta, Usage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_three_at_once_then_one_message_per_interval_and_released_before_finish() -> None:
    sent: list[Any] = []
    clock = Clock()
    g = TextGather(sent.append, 0.05, clock)
    g(Started())
    g(TextDelta("Hel", 1))
    assert sent[-1] == TextDelta("Hel", 1)  # the first text is not held
    clock.now += 0.01
    g(TextDelta("l", 1))  # nor the next two (a guardian may hold the first word until then)
    assert sent[-1] == TextDelta("l", 1)
    g(TextDelta("l", 1))
    assert sent[-1] == TextDelta("l", 1)
    clock.now += 0.04  # 40 ms after the last hand-off: held
    g(TextDelta("lo", 1))
    assert sent[-1] == TextDelta("l", 1)
    clock.now += 0.02  # 60 ms since the last hand-off: both go, as one
    g(TextDelta(" wo", 1))
    assert sent[-1] == TextDelta("lo wo", 2)
    clock.now += 0.01
    g(TextDelta("rld", 1))
    assert sent[-1] == TextDelta("lo wo", 2)
    g(Finished("stop", Usage(3, 5)))  # not text: what was gathered goes first
    assert sent[-2:] == [TextDelta("rld", 1), Finished("stop", Usage(3, 5))]
    text = "".join(e.text for e in sent if isinstance(e, TextDelta))
    assert text == "Hellllo world"
    assert sum(e.tokens for e in sent if isinstance(e, TextDelta)) == 6


def test_tokens_slower_than_the_interval_are_never_held() -> None:
    sent: list[Any] = []
    clock = Clock()
    g = TextGather(sent.append, 0.04, clock)
    for i in range(6):
        g(TextDelta(f"t{i}", 1))
        assert sent[-1] == TextDelta(f"t{i}", 1)
        clock.now += 0.05


def test_an_error_hands_on_the_held_text_first() -> None:
    sent: list[Any] = []
    clock = Clock()
    g = TextGather(sent.append, 0.04, clock)
    for t in "xyz":  # the first three: at once
        g(TextDelta(t, 1))
    clock.now += 0.05
    g(TextDelta("b", 1))  # 50 ms since "z" went: goes at once
    g(TextDelta("c", 1))  # held (0 ms since "b")
    assert sent[-1] == TextDelta("b", 1)
    err = RuntimeError("decode failed")
    g(err)
    assert sent[-3:] == [TextDelta("b", 1), TextDelta("c", 1), err]


def test_off_is_the_emit_itself() -> None:
    def emit(ev: Any) -> None:
        return None

    assert gathering(emit, 0) is emit
    assert isinstance(gathering(emit, 40), TextGather)


@given(st.lists(st.tuples(st.text(min_size=1, max_size=4), st.floats(0, 0.1)), max_size=40))
def test_text_tokens_and_order_are_kept_whatever_the_timing(
    pieces: list[tuple[str, float]],
) -> None:
    sent: list[Any] = []
    clock = Clock()
    g = TextGather(sent.append, 0.04, clock)
    for text, gap in pieces:
        clock.now += gap
        g(TextDelta(text, 1))
    g(Finished("stop", Usage(1, len(pieces))))
    assert isinstance(sent[-1], Finished)
    deltas = sent[:-1]
    assert all(isinstance(e, TextDelta) for e in deltas)
    assert "".join(e.text for e in deltas) == "".join(t for t, _ in pieces)
    assert sum(e.tokens for e in deltas) == len(pieces)
    assert len(deltas) <= len(pieces)
