"""Normalized views of text, so rules match what a reader sees, not the bytes an evader chose.

Rules match on a normalized view and act on the original text: every view keeps, for each
of its characters, the index of the original character it came from.

Two views:

* :func:`skeleton` (for phrase rules): compatibility decomposition with accents dropped
  (fullwidth, mathematical and accented letters become plain), case folded, Cyrillic and
  Greek look-alikes mapped to Latin, digits of any script to ASCII, leetspeak folded
  (``0->o 1->i 3->e 4->a 5->s 7->t 8->b 9->g``, ``l->i``, and ``@ $ ! |`` when they stand
  before a letter or digit), zero-width, bidi-control, tag characters and soft hyphens
  removed, everything else a separator. Words are runs of letters and digits; a run of three
  or more single letters (``s e c r e t``, ``s.e.c.r.e.t``) is one word.
* :func:`plain` (for PII detectors and regex rules): compatibility normalization (NFKC),
  invisible characters removed, digits of any script to ASCII, Cyrillic and Greek
  look-alikes to Latin (case kept), and spaced-out runs (``4 1 1 1 ...``) closed up.

ASCII text that needs no change is handled without per-character work.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# Zero-width and joiners, bidi controls, word joiner and invisible operators, BOM, soft
# hyphen, Mongolian vowel separator, combining grapheme joiner, variation selectors.
_INVISIBLE_RANGES = (
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x2069),
    (0xFEFF, 0xFEFF), (0x00AD, 0x00AD), (0x180E, 0x180E), (0x034F, 0x034F),
    (0xFE00, 0xFE0F), (0xE0000, 0xE007F), (0xE0100, 0xE01EF),
)  # fmt: skip


def is_invisible(ch: str) -> bool:
    """Characters that render as nothing and only serve to split words for a matcher."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _INVISIBLE_RANGES)


# Look-alikes to Latin, both cases (Unicode confusables for the Latin alphabet, trimmed to
# the letters that are commonly used to evade filters).
_CONFUSABLE_PAIRS = (
    # Cyrillic
    "аa бb вb еe ёe кk мm нh оo рp сc тt уy хx ѕs іi їi јj ԁd ӏl ɡg ԛq ԝw һh ү y"
    " АA ВB ЕE КK МM НH ОO РP СC ТT УY ХX ЅS ІI ЈJ ԌG ԚQ ԜW Һh"
    # Greek
    " αa βb γy εe ηn ιi κk νv οo ρp τt υu χx ωw ϲc"
    " ΑA ΒB ΕE ΖZ ΗH ΙI ΚK ΜM ΝN ΟO ΡP ΤT ΥY ΧX"
)
CONFUSABLES: dict[str, str] = {}
for _pair in _CONFUSABLE_PAIRS.split():
    if len(_pair) == 2:
        CONFUSABLES[_pair[0]] = _pair[1]
CONFUSABLES["ү"] = "y"

_LEET_ALWAYS = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                "9": "g", "l": "i"}  # fmt: skip
_LEET_SYMBOLS = {"@": "a", "$": "s", "!": "i", "|": "i"}


@dataclass(frozen=True, slots=True)
class View:
    """A normalized text; ``index[i]`` is the original index of ``text[i]`` (None: same)."""

    text: str
    index: tuple[int, ...] | None
    original_length: int

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original span of ``text[start:end]`` (end exclusive, ``start < end``)."""
        if self.index is None:
            return start, end
        return self.index[start], self.index[end - 1] + 1


@dataclass(frozen=True, slots=True)
class Word:
    """One word of a skeleton, with its span in the original text."""

    text: str
    start: int
    end: int
    #: Made of spaced single letters (or is one letter), so it may go on past a space.
    spaced: bool = False


# --- skeleton ---------------------------------------------------------------------------------

_ASCII_SKELETON = str.maketrans(
    {**{c: " " for c in map(chr, range(128)) if not c.isalnum()},
     **{c: c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
     **_LEET_ALWAYS, "L": "i"}
)  # fmt: skip
_SYMBOL_LEET_RE = re.compile(r"[@$!|](?=[A-Za-z0-9])")
_WORD_RE = re.compile(r"\w+")


@lru_cache(maxsize=4096)
def _skeleton_char(ch: str) -> str:
    """Skeleton of one non-ASCII character: '' (invisible), or one or more characters."""
    if is_invisible(ch):
        return ""
    ch = CONFUSABLES.get(ch, ch)
    out = []
    for d in unicodedata.normalize("NFKD", ch):
        if unicodedata.combining(d):
            continue
        for folded in d.casefold():
            f = CONFUSABLES.get(folded, folded)
            if f.isdigit() and unicodedata.digit(f, None) is not None:
                f = str(unicodedata.digit(f))
            if f.isascii():
                f = f.translate(_ASCII_SKELETON)
            elif not f.isalnum():
                f = " "
            out.append(f)
    return "".join(out)


def skeleton(text: str) -> View:
    """The phrase-matching view of ``text`` (see the module docstring)."""
    if text.isascii():
        fixed = _SYMBOL_LEET_RE.sub(lambda m: _LEET_SYMBOLS[m.group()], text)
        return View(fixed.translate(_ASCII_SKELETON), None, len(text))
    chars: list[str] = []
    index: list[int] = []
    n = len(text)
    for i, ch in enumerate(text):
        if ch.isascii():
            if ch in _LEET_SYMBOLS and i + 1 < n and text[i + 1].isalnum():
                out = _LEET_SYMBOLS[ch]
            else:
                out = ch.translate(_ASCII_SKELETON)
        else:
            out = _skeleton_char(ch)
        for o in out:
            chars.append(o)
            index.append(i)
    return View("".join(chars), tuple(index), n)


def _single_run(tokens: list[str], n: int) -> bool:
    """Whether ``n`` one-character tokens stand in a row (token lengths compared in C)."""
    try:
        lengths = bytes(map(len, tokens))
    except ValueError:  # a token of 256+ characters: take the careful path
        return True
    return b"\x01" * n in lengths


def has_spaced_run(skeleton_text: str) -> bool:
    """Whether three single letters stand in a row (a spaced-out word may hide there).

    Conservative: gaps are not measured here, :func:`words` does that.
    """
    return _single_run(skeleton_text.split(), 3)


def word_texts(view: View) -> list[str]:
    """The words of a skeleton, without spans or joining (cheap: a skeleton is only letters,
    digits and spaces, so ``str.split`` finds its words)."""
    return view.text.split()


def word_spans(view: View) -> list[tuple[int, int]]:
    """Original spans of :func:`word_texts`, in the same order."""
    return [view.span(m.start(), m.end()) for m in _WORD_RE.finditer(view.text)]


def words(view: View, merge_gap: int = 3) -> list[Word]:
    """Words of a skeleton view; runs of 3+ single letters become one word."""
    raw = [(m.group(), m.start(), m.end()) for m in _WORD_RE.finditer(view.text)]
    out: list[Word] = []
    i = 0
    while i < len(raw):
        j = i
        while (
            j + 1 < len(raw)
            and len(raw[j][0]) == 1
            and len(raw[j + 1][0]) == 1
            and raw[j + 1][1] - raw[j][2] <= merge_gap
        ):
            j += 1
        if j - i >= 2:  # three or more single letters
            text = "".join(r[0] for r in raw[i : j + 1])
            s, e = raw[i][1], raw[j][2]
            i = j + 1
            spaced = True
        else:
            text, s, e = raw[i]
            i += 1
            spaced = len(text) == 1
        os_, oe = view.span(s, e)
        out.append(Word(text, os_, oe, spaced))
    return out


def phrase_words(phrase: str) -> tuple[str, ...]:
    """A phrase as the word tuple it matches (normalized like the text it is matched in)."""
    return tuple(w.text for w in words(skeleton(phrase)))


# --- plain ------------------------------------------------------------------------------------

# Four or more single characters, each gap one space (or up to three between groups).
_SPACED_RUN_RE = re.compile(r"(?<!\S)(?:\S {1,3}){3,}\S(?!\S)")


@lru_cache(maxsize=4096)
def _plain_char(ch: str) -> str:
    if is_invisible(ch):
        return ""
    out = []
    for c in unicodedata.normalize("NFKC", ch):
        d = CONFUSABLES.get(c, c)
        if d.isdigit() and not d.isascii():
            v = unicodedata.digit(d, None)
            d = str(v) if v is not None else d
        out.append(d)
    return "".join(out)


def plain(text: str) -> View:
    """The PII / regex view of ``text`` (see the module docstring)."""
    if text.isascii() and not _single_run(text.split(), 4):
        return View(text, None, len(text))
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        out = ch if ch.isascii() else _plain_char(ch)
        for o in out:
            chars.append(o)
            index.append(i)
    joined = "".join(chars)
    if _SPACED_RUN_RE.search(joined):
        drop: set[int] = set()
        for m in _SPACED_RUN_RE.finditer(joined):
            # a one-space gap joins letters; a wider gap stays as one space between groups
            for gap in re.finditer(" +", m.group()):
                first = m.start() + gap.start()
                keep = 0 if gap.end() - gap.start() == 1 else 1
                drop.update(range(first + keep, m.start() + gap.end()))
        chars = [c for k, c in enumerate(chars) if k not in drop]
        index = [x for k, x in enumerate(index) if k not in drop]
        joined = "".join(chars)
    return View(joined, tuple(index), len(text))
