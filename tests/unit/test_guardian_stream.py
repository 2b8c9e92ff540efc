"""The hold-back filter: wherever token boundaries fall, nothing forbidden is released."""

from __future__ import annotations

import random

import pytest

from edged.guardian.matcher import Matcher
from edged.guardian.rules import PII_NAMES, Rule
from edged.guardian.stream import StreamFilter
from tests.unit.evasions import TEXT_TRANSFORMS
from tests.unit.test_guardian_pii import VALUES

PHRASES = ["secret", "launch code", "self destruct sequence"]
RULES = [
    Rule(id="phr", kind="phrase", action="block", phrases=tuple(PHRASES)),
    Rule(id="pii", kind="pii", action="redact", detectors=PII_NAMES),
]
M = Matcher(RULES, "output")


def run(chunks: list[str]) -> tuple[str, list[str]]:
    """Released text, and the blocking rules (empty when the stream finished)."""
    f = StreamFilter(M)
    out = []
    for c in chunks:
        step = f.feed(c)
        if step.blocked_by:
            return "".join(out), step.blocked_by
        out.append(step.release)
    step = f.finish()
    if step.blocked_by:
        return "".join(out), step.blocked_by
    out.append(step.release)
    return "".join(out), []


def splits(text: str) -> list[list[str]]:
    """Every two-chunk split, every three-chunk split around the middle, one char at a time."""
    out = [[text[:i], text[i:]] for i in range(1, len(text))]
    mid = len(text) // 2
    out += [[text[:i], text[i:j], text[j:]] for i in range(1, mid) for j in range(mid, len(text))]
    out.append(list(text))
    return out


@pytest.mark.parametrize("name,value", [(k, v) for k, vs in VALUES.items() for v in vs])
def test_pii_never_leaks_wherever_the_chunks_split(name: str, value: str) -> None:
    text = f"Sure, here: {value} and that is all."
    core = "".join(c for c in value if c.isalnum())
    half = core[: (len(core) + 1) // 2]
    for chunks in splits(text)[:400]:
        released, blocked = run(chunks)
        assert not blocked
        assert f"[REDACTED:{name}]" in released, chunks
        flat = "".join(c for c in released if c.isalnum())
        assert half not in flat, (chunks, released)
        assert released.endswith("and that is all.")


@pytest.mark.parametrize(
    "transform",
    ["identity", "upper", "leet", "cyrillic", "zero-width", "letter-spacing", "fullwidth"],
)
@pytest.mark.parametrize("phrase", PHRASES)
def test_phrase_never_leaks_even_half(phrase: str, transform: str) -> None:
    evasive = TEXT_TRANSFORMS[transform](phrase)
    text = f"Okay: the {evasive} is here."
    first_word = phrase.split(maxsplit=1)[0]
    for chunks in splits(text)[:300]:
        released, blocked = run(chunks)
        assert blocked == ["phr"], chunks
        assert "Okay" in released or len(chunks[0]) < 6 or blocked  # released what was safe
        # not even the first half of the phrase (for one word) or its first word
        assert (
            TEXT_TRANSFORMS[transform](first_word[: max(1, len(first_word) // 2)])
            not in (released.split("the", 1)[-1])
        ), (chunks, released)


def test_benign_text_streams_through_unchanged_and_promptly() -> None:
    text = (
        "The secretary said the launch of the new product went well; codes of conduct "
        "apply. Call it a day at 5 pm, version 1.2.3 is out."
    )
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(text)), 12))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        released, blocked = run(chunks)
        assert not blocked and released == text


def test_hold_back_is_small_on_ordinary_text() -> None:
    text = "It was a bright cold day in April, and the clocks were striking thirteen. " * 3
    f = StreamFilter(M)
    worst = 0
    for i in range(0, len(text), 4):
        f.feed(text[i : i + 4])
        worst = max(worst, f.held_chars)
    assert worst <= 16  # about one word: what could still begin a value or a phrase


def test_block_stops_at_once_and_redaction_spans_chunks() -> None:
    released, blocked = run(["Email jo", "hn@exam", "ple.com", " then the laun", "ch code"])
    assert blocked == ["phr"]
    assert released == "Email [REDACTED:email] then the "


def test_spaced_letters_are_held_whole_even_when_a_letter_begins_another_phrase() -> None:
    m = Matcher(
        [Rule(id="s", kind="phrase", action="block", phrases=("confidential", "overdose"))],
        "output",
    )
    f = StreamFilter(m)
    out = []
    for piece in ["the", " c", " o", " n", " f", " i", " d", " e", " n", " t", " i", " a", " l"]:
        step = f.feed(piece)
        if step.blocked_by:
            break
        out.append(step.release)
    step = f.finish() if not step.blocked_by else step
    assert step.blocked_by == ["s"]
    assert "".join(out).strip() == "the"


def test_a_match_followed_by_a_few_letters_waits_for_them() -> None:
    f = StreamFilter(M)
    out = [f.feed(p).release for p in ["mail jane.doe@example.com.e", "tty now ok"]]
    out.append(f.finish().release)
    assert "".join(out) == "mail [REDACTED:email] now ok"
