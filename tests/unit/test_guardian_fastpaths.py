"""The guardian's shortcuts give what the careful way gives.

``Matcher(..., fast=False)`` runs every rule the careful way (word spans for every text,
every detector on the whole text, on a stream too); the fast matcher must find the same
things, with the same hold point, on any text. Likewise the shortcuts in ``normalize``
(``plain`` by slices, spaced-out runs joined by a regex) against plain per-character code.
"""

from __future__ import annotations

import itertools
import re
import unicodedata

import regex
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edged.guardian import normalize as nz
from edged.guardian.matcher import Matcher, _only_invisible
from edged.guardian.pii import DETECTORS, shape
from edged.guardian.pii_scan import _anchored, _in_regions, may_grow
from edged.guardian.rules import PII_NAMES, Rule
from edged.guardian.stream import StreamFilter
from tests.unit.evasions import PII_TRANSFORMS, TEXT_TRANSFORMS
from tests.unit.test_guardian_pii import VALUES

PHRASES = (
    "secret",
    "launch code",
    "self destruct sequence",
    "how to hack the server",
    "how to steal",
    "how",
    "x",
    "a b",
    "master password",
    "i",
)
RULES = [
    Rule(id="phr", kind="phrase", action="block", phrases=PHRASES),
    Rule(id="phr2", kind="phrase", action="flag", phrases=("launch code", "hack")),
    Rule(id="pii", kind="pii", action="redact", detectors=PII_NAMES),
    Rule(id="rx", kind="regex", action="flag", pattern=r"\bproj-\d{3}\b"),
]
FAST = {d: Matcher(RULES, d) for d in ("input", "output")}
CAREFUL = {d: Matcher(RULES, d, fast=False) for d in ("input", "output")}

# Pieces that make the shortcuts' decisions go both ways: phrases and PII values (also
# evaded), spaced-out letters, digits of other scripts, look-alikes, invisible characters.
_EVADED = [TEXT_TRANSFORMS[t](p) for t in sorted(TEXT_TRANSFORMS) for p in PHRASES[:4]]
_VALUES = [v for vs in VALUES.values() for v in vs]
_PII_EVADED = [PII_TRANSFORMS[t](v) for t in sorted(PII_TRANSFORMS) for v in _VALUES[::3]]
FRAGMENTS = [
    *PHRASES,
    *_EVADED,
    *_VALUES,
    *_PII_EVADED,
    "s e c r e t",
    "l a u n c h  c o d e",
    "I a m",
    "k k k k",
    "a  b   c    d",
    "1 2 3 4",
    "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    "PRIVATE KEY-----",
    "-----BEGIN ",
    "eyJ",
    "AKIA",
    "ghp_",
    "@",
    "GB82",
    "DE89 ",
    "123-45-",
    "415 555",
    "192.168.",
    "2001:db8::",
    "fe80::",
    "+1 (",
    "proj-123",
    "proj-",
    "\u200b",
    "\u00ad",
    "\uff11\uff12",
    "\u0661\u0662\u0663",
    "\u0430",
    "\u0455",
    "caf\u00e9",
    "\u2019",
    "\n",
    "\t",
    "  ",
    " ",
    ".",
    "-",
    ":",
    "$",
    "@",
    "|",
    "!",
    "_",
]
ALPHABET = "aeiklsxAKZ0123456789 .-:@()+_\n\u00e9\u0430\u200b\uff15\u0663"

texts = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet=ALPHABET, max_size=6)),
    max_size=14,
).map("".join)
ascii_texts = st.text(alphabet="aA zZ09 .-()+_:@\n", max_size=40)

SETTINGS = settings(max_examples=700, deadline=None)


def _index(view: nz.View) -> list[int]:
    return [view.span(i, i + 1)[0] for i in range(len(view.text))]


# --- normalize --------------------------------------------------------------------------


def _plain_reference(text: str) -> nz.View:
    """``plain`` as it was written first: character by character, then a set of drops."""
    run_re = re.compile(r"(?<!\S)(?:\S {1,3}){3,}\S(?!\S)")
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        out = ch if ch.isascii() else nz._plain_char(ch)
        for o in out:
            chars.append(o)
            index.append(i)
    joined = "".join(chars)
    drop: set[int] = set()
    for m in run_re.finditer(joined):
        for gap in re.finditer(" +", m.group()):
            first = m.start() + gap.start()
            keep = 0 if gap.end() - gap.start() == 1 else 1
            drop.update(range(first + keep, m.start() + gap.end()))
    chars = [c for k, c in enumerate(chars) if k not in drop]
    index = [x for k, x in enumerate(index) if k not in drop]
    return nz.View("".join(chars), tuple(index), len(text))


def _skeleton_reference(text: str) -> nz.View:
    """``skeleton`` as it was written first for non-ASCII text: character by character."""
    chars: list[str] = []
    index: list[int] = []
    n = len(text)
    for i, ch in enumerate(text):
        if ch.isascii():
            if ch in nz._LEET_SYMBOLS and i + 1 < n and text[i + 1].isalnum():
                out = nz._LEET_SYMBOLS[ch]
            else:
                out = ch.translate(nz._ASCII_SKELETON)
        else:
            out = nz._skeleton_char(ch)
        for o in out:
            chars.append(o)
            index.append(i)
    return nz.View("".join(chars), tuple(index), n)


@SETTINGS
@given(texts)
@example("$\u0455ecret |\u0430unch @\uff41 !\u00e9 \u00df\u00e9 \ufb01x \u200b$")
@example("caf\u00e9 s e c r e t \u2019 $")
def test_skeleton_matches_the_character_by_character_reference(text: str) -> None:
    got, want = nz.skeleton(text), _skeleton_reference(text)
    assert got.text == want.text
    assert _index(got) == _index(want)


@SETTINGS
@given(texts)
@example("a b c d")
@example(" a  b c   d    e f g h")
@example("x\ta b c d")
@example("\u00e9 a b c d \u00e9")
@example("\ufb01 \u00e9 \u200b a b c d \u0661")
def test_plain_matches_the_character_by_character_reference(text: str) -> None:
    got, want = nz.plain(text), _plain_reference(text)
    assert got.text == want.text
    assert _index(got) == _index(want)
    assert got.original_length == len(text)


def _words_reference(view: nz.View) -> list[tuple[str, int, int, bool]]:
    """``words`` as it was written first: every ``\\w+`` match, runs joined in a loop."""
    raw = [(m.group(), m.start(), m.end()) for m in re.finditer(r"\w+", view.text)]
    out = []
    i = 0
    while i < len(raw):
        j = i
        while (
            j + 1 < len(raw)
            and len(raw[j][0]) == 1
            and len(raw[j + 1][0]) == 1
            and raw[j + 1][1] - raw[j][2] <= 3
        ):
            j += 1
        if j - i >= 2:
            text, s, e, spaced = "".join(r[0] for r in raw[i : j + 1]), raw[i][1], raw[j][2], True
            i = j + 1
        else:
            (text, s, e), spaced = raw[i], len(raw[i][0]) == 1
            i += 1
        out.append((text, *view.span(s, e), spaced))
    return out


@SETTINGS
@given(texts)
@example("s e c r e t")
@example("a b c\u200bd \uff41")
def test_words_match_the_reference(text: str) -> None:
    view = nz.skeleton(text)
    assert [tuple(w) for w in nz.words(view)] == _words_reference(view)


@SETTINGS
@given(texts)
@example("s e c r e t")
@example("a b  c   d    e f")
@example("ab c d e f")
@example("a b c\u200bd")
def test_merged_word_texts_are_the_words_texts(text: str) -> None:
    view = nz.skeleton(text)
    assert nz.merged_word_texts(view) == [w.text for w in nz.words(view)]


# --- pii --------------------------------------------------------------------------------


@SETTINGS
@given(st.one_of(ascii_texts, texts.filter(str.isascii)))
@example("AB12")
@example("123-45-6")
@example("123 45-6")
@example("1 2-3 4")
@example("1.2")
@example("1 (2) 3")
def test_shape_triggers_fire_exactly_with_the_triggers(text: str) -> None:
    _same_triggers(text)


def _same_triggers(text: str) -> None:
    shaped = shape(text)
    assert len(shaped) == len(text)
    for d in DETECTORS:
        if d.shape_trigger is None:
            continue
        assert d.trigger is not None
        want = re.search(d.trigger, text) is not None
        assert (re.search(d.shape_trigger, shaped) is not None) == want, (d.name, text)


@SETTINGS
@given(texts)
@example("\u0661\u0662\u0663-\u0664\u0665-\u0666\u0667\u0668\u0669 \uff11\uff12\uff13\uff14")
@example("\U0001d7ce\U0001d7cf \u0966\u0967\u0968 \u00b2\u00b3 \u2460")
def test_a_plain_view_has_only_ascii_digits(text: str) -> None:
    """What the shape triggers and regions rely on: in a plain view ``\\d`` is ``[0-9]``."""
    view = nz.plain(text).text
    assert re.search(r"(?![0-9])\d", view) is None
    assert regex.search(r"(?![0-9])\d", view) is None
    _same_triggers(view)


def test_shape_triggers_on_every_short_text_of_their_characters() -> None:
    for alphabet, size in (("1 -", 8), ("1A.(a)", 5), ("9Z. -", 6)):
        for n in range(size + 1):
            for chars in itertools.product(alphabet, repeat=n):
                text = "".join(chars)
                shaped = shape(text)
                for d in DETECTORS:
                    if d.shape_trigger is not None and d.trigger is not None:
                        want = re.search(d.trigger, text) is not None
                        got = re.search(d.shape_trigger, shaped) is not None
                        assert got == want, (d.name, text)


def test_the_beginnings_of_values_stay_in_the_detectors_charset() -> None:
    """On a stream without a detector's trigger, only the run of its characters that ends
    the text is searched: every beginning of a value without the trigger (all of the value,
    but for the key block, whose body comes after its trigger) must be made of them."""
    for d in DETECTORS:
        assert d.charset is not None and d.trigger is not None
        allowed = re.compile(f"{d.charset}*")
        for value in VALUES[d.name]:
            assert d.first is None or re.match(d.first, value), (d.name, value)
            for end in range(1, len(value) + 1):
                head = value[:end]
                if re.search(d.trigger, head) is None or d.name != "private_key_block":
                    assert allowed.fullmatch(head), (d.name, head)


# --- matcher ----------------------------------------------------------------------------


def _same_scan(text: str, stream: bool) -> None:
    for direction in ("input", "output"):
        got = FAST[direction].scan(text, stream=stream)
        want = CAREFUL[direction].scan(text, stream=stream)
        assert got == want, (direction, stream, text)


@SETTINGS
@given(texts)
@example("how to hack the server how to steal how")
@example("I s e c r e t a b x")
@example("k k k k launch code i")
@example("My card 4111 1111 1111 1111 and 192.168.10.24 ok")
def test_fast_scan_finds_what_the_careful_scan_finds(text: str) -> None:
    _same_scan(text, stream=False)


@SETTINGS
@given(texts)
@example("call me at +1 (415")
@example("mail jane.doe@exa")
@example("-----BEGIN RSA PRIV")
@example("key ghp_a1B2")
@example("s e c r")
@example("fe80:")
def test_fast_stream_scan_finds_what_the_careful_scan_finds(text: str) -> None:
    _same_scan(text, stream=True)


@settings(max_examples=300, deadline=None)
@given(texts, st.lists(st.integers(1, 7), min_size=1, max_size=30))
def test_stream_filter_releases_the_same_with_and_without_shortcuts(
    text: str, sizes: list[int]
) -> None:
    pieces = []
    pos = 0
    k = 0
    while pos < len(text):
        n = sizes[k % len(sizes)]
        pieces.append(text[pos : pos + n])
        pos += n
        k += 1
    fast, careful = StreamFilter(FAST["output"]), StreamFilter(CAREFUL["output"])
    for piece in pieces:
        a, b = fast.feed(piece), careful.feed(piece)
        assert a == b, (text, pieces)
        if a.blocked_by:
            return
    assert fast.finish() == careful.finish()


def test_the_skeleton_needs_no_other_whitespace_than_spaces() -> None:
    """``merged_word_texts`` and ``word_texts`` split a skeleton with ``str.split`` and the
    run regex reads gaps as spaces: a skeleton holds only letters, digits and spaces."""
    sample = "".join(chr(c) for c in range(0x20, 0x3000) if unicodedata.category(chr(c)) != "Cs")
    sk = nz.skeleton(sample + "\t\n\r\x0b\x0c\x1c\x85\u2028\u3000").text
    assert all(c == " " or c.isalnum() for c in sk)


@SETTINGS
@given(texts)
@example("s e c r e t")
@example("x a b c y  d e f g z")
@example("a b c")
@example("ab c d e f gh i j k")
def test_word_spans_are_the_words_spans(text: str) -> None:
    view = nz.skeleton(text)
    want = nz.words(view)
    split = nz.word_texts(view)
    merged = nz.merged_word_texts(view, split)
    spans = nz.WordSpans(view, split, merged=merged is not split)
    for i, w in enumerate(want):
        assert spans.span(i, i) == (w.start, w.end)
        assert spans.span(0, i) == (want[0].start, w.end)


def test_leads_are_ascii_classes() -> None:
    """The matcher keeps them as sets of ASCII characters."""
    for d in DETECTORS:
        if d.lead is not None:
            assert not any(re.fullmatch(d.lead, chr(c)) for c in range(128, 0x3000)), d.name


def test_heads_begin_every_value_and_hold_the_trigger() -> None:
    for d in DETECTORS:
        if not d.heads:
            continue
        assert d.trigger is not None
        for head in d.heads:
            assert re.search(d.trigger, head), (d.name, head)
        for value in VALUES[d.name]:
            assert value.startswith(d.heads), (d.name, value)
        # the pattern itself starts with one of them: a value changed at its start is no
        # value, wherever the change is made
        for value in VALUES[d.name]:
            head = next(h for h in d.heads if value.startswith(h))
            for i in range(len(head)):
                broken = value[:i] + ("x" if value[i] != "x" else "y") + value[i + 1 :]
                assert not any(m.start() == 0 for m in regex.finditer(d.pattern, broken)), broken


COMPILED = {c.name: c for c in FAST["input"]._pii.detectors}
digit_texts = st.one_of(
    st.text(alphabet="0123456789 -.()+AZx\u00e9\u0663\uff15", max_size=70),
    st.lists(
        st.sampled_from(
            [*_VALUES, "1", "12", "123", " ", "-", "(", ")", "+", ".", "GB", "99", "x", "  ", "--"]
        ),
        max_size=12,
    ).map("".join),
)


@settings(max_examples=1500, deadline=None)
@given(digit_texts)
@example("+1 (415) 555-0132 and 4111 1111 1111 1111")
@example("(415) 555-0132")
@example("12 (415) 555 0132")
@example("GB82 WEST 1234 5698 7654 32GB82 WEST 1234 5698 7654 32")
@example("123-45-6789-12-3456")
def test_regions_give_what_finditer_gives(raw: str) -> None:
    text = nz.plain(raw).text  # (regions read a plain view: its digits are all ASCII)
    shaped = shape(text)
    for det in COMPILED.values():
        if det.region is None:
            continue
        want = [(m.start(), m.end()) for m in det.pattern.finditer(text)]
        got = [(m.start(), m.end()) for m in _in_regions(det, text, shaped)]
        assert got == want, (det.name, text)


@settings(max_examples=1500, deadline=None)
@given(
    st.one_of(
        st.text(alphabet="ab19fF.:@-_%+ x", max_size=60),
        st.lists(
            st.sampled_from(
                [*_VALUES, "@", ":", "::", "a", "f", ".", " ", "x.y", "fe80", "1:2", "-", "_"]
            ),
            max_size=12,
        ).map("".join),
    )
)
@example("jane.doe@example.com, a+b@sub.example.co.uk")
@example("x@y a@b.cc")
@example("2001:db8:85a3::8a2e:370:7334 fe80::1")
@example("deadbeefcafe:1:2")
def test_anchors_give_what_finditer_gives(text: str) -> None:
    for det in COMPILED.values():
        if det.anchor is None:
            continue
        want = [(m.start(), m.end()) for m in det.pattern.finditer(text)]
        got = [(m.start(), m.end()) for m in _anchored(det, text)]
        assert got == want, (det.name, text)


def test_the_invisible_regex_is_is_invisible() -> None:
    near = {c + d for lo, hi in nz._INVISIBLE_RANGES for c in (lo, hi) for d in (-2, -1, 0, 1, 2)}
    for cp in sorted(near | set(range(0, 0x3000, 7))):
        ch = chr(cp)
        assert (nz.INVISIBLE_RE.fullmatch(ch) is not None) == nz.is_invisible(ch), hex(cp)


@SETTINGS
@given(texts, st.integers(0, 60))
@example("ab\u200b\u200b\u200bcd", 2)
@example("ab\u200b", 2)
def test_may_grow_and_only_invisible_match_their_definitions(text: str, end: int) -> None:
    end = min(end, len(text))
    rest = [c for c in text[end:] if not nz.is_invisible(c)]
    assert may_grow(text, end) == (len(rest) <= 3)
    assert _only_invisible(text, end) == all(nz.is_invisible(c) for c in text[end:])
