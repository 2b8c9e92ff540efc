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

ASCII text is handled without per-character work (``str.translate``, slices, regexes with a
literal first character); other text character by character only where it is not ASCII, and
its index is kept as runs (:class:`Pieces`), not one entry per character.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, compress
from typing import NamedTuple

# Zero-width and joiners, bidi controls, word joiner and invisible operators, BOM, soft
# hyphen, Mongolian vowel separator, combining grapheme joiner, variation selectors.
_INVISIBLE_RANGES = (
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x2069),
    (0xFEFF, 0xFEFF), (0x00AD, 0x00AD), (0x180E, 0x180E), (0x034F, 0x034F),
    (0xFE00, 0xFE0F), (0xE0000, 0xE007F), (0xE0100, 0xE01EF),
)  # fmt: skip


#: One or more of those characters.
INVISIBLE_RE = re.compile(
    "[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _INVISIBLE_RANGES) + "]+"
)


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

_LEET_ALWAYS = dict(zip("01345789l", "oieastbgi", strict=True))  # digit (or l) -> letter
_LEET_SYMBOLS = {"@": "a", "$": "s", "!": "i", "|": "i"}


class Pieces:
    """An index kept as runs, built in the number of runs rather than of characters: run
    ``k`` starts at view position ``starts[k]``, which comes from original position
    ``origins[k]``, and steps by one through ``widths[k]`` original characters (a run of
    width 1 is one original character that became several, all mapped to it)."""

    __slots__ = ("_origins", "_starts", "_widths")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._origins: list[int] = []
        self._widths: list[int] = []

    def add(self, at: int, origin: int, width: int) -> None:
        """A run from view position ``at`` (the runs come in order, none empty)."""
        self._starts.append(at)
        self._origins.append(origin)
        self._widths.append(width)

    def tolist(self, length: int) -> list[int]:
        """The index of a view of ``length`` characters as a list."""
        out: list[int] = []
        ends = [*self._starts[1:], length]
        for at, end, origin, width in zip(
            self._starts, ends, self._origins, self._widths, strict=True
        ):
            if end - at == width:
                out.extend(range(origin, origin + width))
            else:
                out.extend([origin] * (end - at))
        return out

    def __getitem__(self, i: int) -> int:
        k = bisect_right(self._starts, i) - 1
        step = i - self._starts[k]
        width = self._widths[k]
        return self._origins[k] + (step if step < width else width - 1)


class _Builder:
    """A view's text and :class:`Pieces` index, put together a stretch at a time."""

    __slots__ = ("at", "index", "parts")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.index = Pieces()
        self.at = 0

    def add(self, out: str, origin: int, width: int) -> None:
        """``out`` came from ``width`` original characters from ``origin`` (one for one, or
        all from one character when ``width`` is 1)."""
        if out:
            self.parts.append(out)
            self.index.add(self.at, origin, width)
            self.at += len(out)


@dataclass(frozen=True, slots=True)
class View:
    """A normalized text; ``index[i]`` is the original index of ``text[i]`` (None: same)."""

    text: str
    index: tuple[int, ...] | Pieces | None
    original_length: int

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original span of ``text[start:end]`` (end exclusive, ``start < end``)."""
        if self.index is None:
            return start, end
        return self.index[start], self.index[end - 1] + 1


class Word(NamedTuple):
    """One word of a skeleton, with its span in the original text (immutable, cheap to
    build: a named tuple)."""

    text: str
    start: int
    end: int
    #: Made of spaced single letters (or is one letter), so it may go on past a space.
    spaced: bool = False


# --- skeleton ---------------------------------------------------------------------------------

_ASCII_SKELETON = str.maketrans(
    {
        **{c: " " for c in map(chr, range(128)) if not c.isalnum()},
        **{c: c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
        **_LEET_ALWAYS,
        "L": "i",
    }
)
_SYMBOL_LEET_RE = re.compile(r"[@$!|](?=[A-Za-z0-9])")
_SYMBOL_LEET_ANY_RE = re.compile(r"[@$!|](?=[^\W_])")  # before any letter or digit
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]+")
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
    # ASCII stretches translated whole (in C); only the other characters one by one
    fixed = _SYMBOL_LEET_ANY_RE.sub(lambda m: _LEET_SYMBOLS[m.group()], text)
    out = _Builder()
    pos = 0
    for m in _NON_ASCII_RE.finditer(fixed):
        a, b = m.span()
        out.add(fixed[pos:a].translate(_ASCII_SKELETON), pos, a - pos)
        for i in range(a, b):
            out.add(_skeleton_char(fixed[i]), i, 1)
        pos = b
    out.add(fixed[pos:].translate(_ASCII_SKELETON), pos, len(text) - pos)
    return View("".join(out.parts), out.index, len(text))


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


# A run of three or more one-character words, each gap 1-3 spaces: what :func:`words` joins
# (with its default ``merge_gap``); a skeleton is only letters, digits and spaces. The match
# starts at the space after the run's first letter (a literal first character lets ``re``
# skip ahead with a string search instead of trying every position), so the letter before
# it stays and the joined rest lands next to it.
_CHAIN_RE = re.compile(r" (?<=(?<!\S)\S ) {0,2}\S(?: {1,3}\S)+(?!\S)")


def _close_chain(m: re.Match[str]) -> str:
    return m.group().replace(" ", "")


def merged_word_texts(view: View, texts: list[str] | None = None) -> list[str]:
    """``[w.text for w in words(view)]``, without spans: spaced-out runs joined by a regex
    on the skeleton, then ``str.split``. ``texts`` is :func:`word_texts` if already made."""
    if texts is None:
        texts = view.text.split()
    if not _single_run(texts, 3):
        return texts
    return _CHAIN_RE.sub(_close_chain, view.text).split()


def word_spans(view: View) -> list[tuple[int, int]]:
    """Original spans of :func:`word_texts`, in the same order."""
    return [view.span(m.start(), m.end()) for m in _WORD_RE.finditer(view.text)]


class WordSpans:
    """Original spans of the words :func:`merged_word_texts` gives, without making a
    :class:`Word` for every word: only the words asked for are located, each by counting
    the same words before it and finding that occurrence (``str.find``); where spaced-out
    runs were joined, word offsets come from running sums (in C) and the runs from the same
    regex that joined them."""

    __slots__ = ("_chains", "_split", "_starts", "_view")

    def __init__(self, view: View, split: list[str], merged: bool) -> None:
        """``split`` is :func:`word_texts`; ``merged``: whether any run was joined."""
        self._view = view
        self._split = split
        self._starts: list[int] | None = None
        # joined runs: (index among merged words, first word, last word in ``split``)
        self._chains: list[tuple[int, int, int]] = []
        if merged:
            parts = view.text.split(" ")  # a skeleton's only space is " "
            ends = accumulate(map((1).__add__, map(len, parts)), initial=0)
            self._starts = starts = list(compress(ends, parts))  # where each word starts
            extra = 0
            for m in _CHAIN_RE.finditer(view.text):
                first = bisect_left(starts, m.start() - 1)
                last = first + len(m.group().split())
                self._chains.append((first - extra, first, last))
                extra += last - first

    def _start(self, t: int) -> int:
        """Where word ``t`` of ``split`` starts in the skeleton."""
        if self._starts is not None:
            return self._starts[t]
        word = self._split[t]
        before = self._split[:t].count(word)  # the same word, as a word, before it
        text = self._view.text
        n, k = len(text), len(word)
        at = text.find(word)
        while at >= 0:
            end = at + k
            if (at == 0 or text[at - 1] == " ") and (end == n or text[end] == " "):
                if not before:
                    return at
                before -= 1
                at = text.find(word, end)
            else:
                at = text.find(word, at + 1)
        raise ValueError(f"word {t} is not in the skeleton")  # pragma: no cover

    def joined(self, i: int) -> bool:
        """Whether merged word ``i`` is a spaced-out run joined into one word."""
        return any(at == i for at, _first, _last in self._chains)

    def _range(self, i: int) -> tuple[int, int]:
        """Merged word ``i`` as its first and last word of ``split``."""
        extra = 0
        for at, first, last in self._chains:
            if at == i:
                return first, last
            if at > i:
                break
            extra = last - at
        return i + extra, i + extra

    def span(self, i: int, j: int) -> tuple[int, int]:
        """Original span of merged words ``i`` to ``j`` (``i <= j``)."""
        first = self._range(i)[0]
        last = self._range(j)[1]
        return self._view.span(self._start(first), self._start(last) + len(self._split[last]))


def words(view: View, merge_gap: int = 3) -> list[Word]:
    """Words of a skeleton view; runs of 3+ single letters become one word."""
    split = view.text.split()
    if not _single_run(split, 3):  # no three single letters in a row: nothing to join
        # a skeleton is only letters, digits and " ": word offsets by running sums, in C
        parts = view.text.split(" ")
        starts = compress(accumulate(map((1).__add__, map(len, parts)), initial=0), parts)
        idx = view.index
        if idx is None:
            return [Word(w, s, s + len(w), len(w) == 1) for w, s in zip(split, starts, strict=True)]
        return [
            Word(w, idx[s], idx[s + len(w) - 1] + 1, len(w) == 1)
            for w, s in zip(split, starts, strict=True)
        ]
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

# Four or more single characters, each gap one space (or up to three between groups):
# ``(?<!\S)(?:\S {1,3}){3,}\S(?!\S)``, written to start at the space after the first
# character (a literal first character is found with a fast string search), so a match
# of the run begins one character before ``m.start()``.
_SPACED_RUN_RE = re.compile(r" (?<=(?<!\S)\S ) {0,2}\S(?: {1,3}\S){2,}(?!\S)")


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


_GAP_RE = re.compile(r" +")


def plain(text: str) -> View:
    """The PII / regex view of ``text`` (see the module docstring)."""
    if text.isascii():
        if _SPACED_RUN_RE.search(text) is None:
            return View(text, None, len(text))
        # only the spaced-out runs change: the rest is sliced, and the index is kept as runs
        kept = _Builder()
        pos = 0
        for a, b in _closing(text):
            kept.add(text[pos:a], pos, a - pos)
            pos = b
        kept.add(text[pos:], pos, len(text) - pos)
        return View("".join(kept.parts), kept.index, len(text))
    # ASCII stretches are kept as they are (sliced, in C); only the others, char by char
    out = _Builder()
    pos = 0
    for m in _NON_ASCII_RE.finditer(text):
        a, b = m.span()
        out.add(text[pos:a], pos, a - pos)
        for i in range(a, b):
            out.add(_plain_char(text[i]), i, 1)
        pos = b
    out.add(text[pos:], pos, len(text) - pos)
    joined = "".join(out.parts)
    drops = _closing(joined)
    if not drops:
        return View(joined, out.index, len(text))
    index = out.index.tolist(len(joined))
    kept_text: list[str] = []
    kept_index: list[int] = []
    pos = 0
    for a, b in drops:
        kept_text.append(joined[pos:a])
        kept_index.extend(index[pos:a])
        pos = b
    kept_text.append(joined[pos:])
    kept_index.extend(index[pos:])
    return View("".join(kept_text), tuple(kept_index), len(text))


def _closing(text: str) -> list[tuple[int, int]]:
    """Spans of ``text`` to leave out to close up its spaced-out runs, in order."""
    drops: list[tuple[int, int]] = []
    for m in _SPACED_RUN_RE.finditer(text):
        # a one-space gap joins letters; a wider gap stays as one space between groups
        for gap in _GAP_RE.finditer(text, m.start(), m.end()):
            keep = 0 if gap.end() - gap.start() == 1 else 1
            drops.append((gap.start() + keep, gap.end()))
    return drops
